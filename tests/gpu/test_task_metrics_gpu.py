"""Task metrics during training on a GPU (NCCL, bf16, a varlen training attention); skipped without CUDA.

One rank of ZeRO-3 on the GPU: the model trains with medtune's fastest varlen attention here,
generation switches to transformers' sdpa and back, and the answers and scores equal
`medtune eval`'s of the same bf16 weights on the same GPU.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import needs_shared_data
from tests.integration.helpers import medtune, save_tiny_model
from tests.integration.test_task_metrics_zero3 import eval_recipe, run_driver

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"), needs_shared_data()]


def _training_attention() -> str:
    from medtune.kernels.attention import unavailable

    for backend in ("flash_attn", "torch_varlen", "sdpa_varlen"):
        if unavailable(backend, torch.device("cuda"), torch.bfloat16, 16) is None:
            return backend
    return "sdpa_varlen"


def test_task_metrics_on_gpu_equal_medtune_eval(tmp_path):
    from transformers import AutoModelForCausalLM

    model = save_tiny_model(tmp_path / "model", seed=3)
    AutoModelForCausalLM.from_pretrained(model).to(torch.bfloat16).save_pretrained(model)
    recipe = eval_recipe(tmp_path / "eval.yaml", batch_size=2)
    run = tmp_path / "run"
    run.mkdir()
    backend = _training_attention()
    proc = run_driver(model, recipe, run, step=3, procs=1, env_extra={"DRIVER_ATTENTION": backend})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    got = json.loads((run / "rank-0.json").read_text())
    assert got["rng_unchanged"] and got["training"] and got["partitioned"]
    assert got["attention"] == got["expected_attention"]
    out = tmp_path / "eval"
    medtune("eval", "--model", str(model), "--recipe", str(recipe), "--out", str(out))
    want = json.loads((out / "results.json").read_text())["sets"]
    print(backend, got["metrics"])
    assert (run / "evals" / "step-3" / "generations.jsonl").read_text() == \
        (out / "generations.jsonl").read_text()
    assert json.loads((run / "evals" / "step-3" / "results.json").read_text())["sets"] == want
