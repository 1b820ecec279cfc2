"""An export is refused when a tensor is missing, misshapen or an empty ZeRO-3 placeholder."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from medtune.engine.export import ExportError, verify
from tests.integration.helpers import save_tiny_model


@pytest.fixture
def export(tmp_path):
    return save_tiny_model(tmp_path / "model")


def _rewrite(export, change):
    f = export / "model.safetensors"
    tensors = load_file(str(f))
    change(tensors)
    save_file(tensors, str(f), metadata={"format": "pt"})


def test_a_good_export_passes(export):
    verify(export)


@pytest.mark.parametrize("change,message", [
    (lambda t: t.pop("model.norm.weight"), "model.norm.weight missing"),
    (lambda t: t.__setitem__("lm_head.weight", torch.empty(0)), "lm_head.weight has shape [0]"),
    (lambda t: t.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(3, 3)),
     "model.layers.0.mlp.up_proj.weight has shape [3, 3]"),
    (lambda t: t.__setitem__("stray.weight", torch.zeros(2)), "stray.weight is not a tensor"),
])
def test_a_broken_export_is_refused(export, change, message):
    _rewrite(export, change)
    with pytest.raises(ExportError, match=message.replace("[", r"\[").replace("]", r"\]")):
        verify(export)


def test_zero_size_tensor_of_the_right_name_is_refused(tmp_path):
    """What ZeRO-3 writes when shards are not gathered: every tensor of shape [0]."""
    export = save_tiny_model(tmp_path / "model")
    _rewrite(export, lambda t: t.update({k: torch.empty(0) for k in t}))
    with pytest.raises(ExportError, match="export failed verification"):
        verify(export)
