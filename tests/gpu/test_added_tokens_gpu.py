"""Added tokens on a GPU: 1-rank ZeRO-3 in bf16 grows the tiny Llama from 1,000 to 1,002 rows, trains,
exports 1,002 rows whose new rows are the mean of the old (lr 1e-30), and the export reloads and
generates in a padded batch. The CPU twin is tests/integration/test_added_tokens_zero3.py. Skipped without CUDA.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.integration.helpers import load_weights, metrics
from tests.integration.test_added_tokens_zero3 import ADDED, _run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = {"launch.procs": 1, "model.dtype": "bf16"}


def test_added_tokens_grow_train_and_export_on_one_gpu(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _ = _run(tmp_path, "gpu", overrides=GPU, lr=1e-30, warmup_steps=0, max_grad_norm=0.0)
    losses = [m["train/loss"] for m in metrics(run) if "train/loss" in m]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses), losses
    weights = load_weights(run / "export")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        w = weights[name].float()
        assert tuple(w.shape) == (1002, 64), name
        mean, spread = w[:1000].mean(0), w[:1000].std(0)
        # bf16 rows: the mean rounded to bf16 (8 bits of mantissa)
        assert ((w[1000:] - mean).abs() <= 1e-2 * mean.abs() + 1e-3 * spread + 1e-6).all(), name
    assert json.loads((run / "export" / "config.json").read_text())["vocab_size"] == 1002
    tok = AutoTokenizer.from_pretrained(run / "export")
    model = AutoModelForCausalLM.from_pretrained(run / "export", dtype=torch.float32).cuda().eval()
    assert tok.convert_tokens_to_ids(ADDED) == [1000, 1001] and tok.padding_side == "left"
    batch = tok(["<|query|> short", "<|query|> a longer prompt than the first one <|answer|>"],
                padding=True, return_tensors="pt").to("cuda")
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] > batch.input_ids.shape[1]
