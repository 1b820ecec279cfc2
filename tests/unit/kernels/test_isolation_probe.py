"""The start-up isolation probe passes the backends that keep samples apart and refuses a leaking one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from medtune.data.collator import collate
from medtune.engine.trainer import model_inputs
from medtune.kernels.attention import Choice
from medtune.kernels.isolation import IsolationError, check, probe, tiny_config
from medtune.base.errors import UserError
from tests.integration.helpers import TINY_LLAMA

CPU = torch.device("cpu")


def _config(**extra):
    from transformers import AutoConfig

    cfg = {**TINY_LLAMA, **extra}
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def _inputs_for(choice: Choice):
    def inputs_for(lengths):
        inputs = model_inputs(collate([([3] * n, [3] * n) for n in lengths], pad_id=0), CPU, choice)
        del inputs["input_ids"]
        return inputs
    return inputs_for


@pytest.mark.parametrize("backend", ["sdpa_varlen", "sdpa", "eager"])
def test_backends_that_isolate_pass_and_the_rng_is_untouched(backend):
    choice = Choice(backend, "test")
    before = torch.get_rng_state()
    result = check(_config(), backend, choice.implementation, _inputs_for(choice), CPU, torch.float32)
    assert torch.equal(before, torch.get_rng_state())
    assert result.isolated and result.max_difference < 1e-5 and result.family == "llama"


def _leaky(module, query, key, value, attention_mask, scaling=None, **_):
    """Causal attention over the whole row: every sample sees the ones before it."""
    gqa = query.shape[1] != key.shape[1]
    out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2), None


def test_a_backend_that_leaks_on_purpose_is_refused_in_one_line_naming_it_and_the_versions():
    transformers.AttentionInterface.register("medtune_test_leaky", _leaky)
    inputs_for = _inputs_for(Choice("sdpa_varlen", "test"))
    with pytest.raises(IsolationError) as err:
        check(_config(), "leaky", "medtune_test_leaky", inputs_for, CPU, torch.float32)
    line = str(err.value)
    assert "\n" not in line and isinstance(err.value, UserError)
    assert line.startswith("attention probe failed: leaky lets the samples of a packed row attend")
    assert f"transformers {transformers.__version__}" in line and f"torch {torch.__version__}" in line


def test_transformers_no_longer_detecting_packed_rows_is_caught():
    """sdpa given positions that do not restart per sample sees one long sequence: a leak."""
    def one_sequence(lengths):
        return dict(position_ids=torch.arange(sum(lengths))[None], attention_mask=None, use_cache=False)

    result = probe(_config(), "sdpa", one_sequence, CPU, torch.float32)
    assert not result.isolated and result.max_difference > 1e-2


def test_tiny_config_keeps_the_family_and_cuts_layer_types():
    cfg = tiny_config(_config(model_type="qwen2", layer_types=["full_attention"] * 4, num_hidden_layers=4))
    assert cfg.model_type == "qwen2" and cfg.num_hidden_layers == 2 and len(cfg.layer_types) == 2
    assert cfg.hidden_size == 64
    assert tiny_config(_config(model_type="mistral", sliding_window=4)).sliding_window == 11
