"""Added tokens under real 2-rank ZeRO-3: the model grows from 1,000 to 1,002 rows, trains, exports 1,002
rows, and the export and its tokenizer reload with transformers and generate in a padded batch.

transformers#25977/#26024 and #32170/#32192 (an lm_head or vocab_size of 0 or the old size after a
resize under ZeRO-3) are the shape this guards: the gathered export must hold 1,002 rows in both layers,
and with a learning rate too small to move a weight (1e-30), the new rows are the mean of the old ones
after DeepSpeed partitioned them (rank 0's copy, broadcast).
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import RECIPES
from tests.integration.helpers import load_weights, medtune, metrics, write_recipe

ADDED = ["<|query|>", "<|answer|>"]


def _run(tmp_path, name: str, overrides: dict | None = None, **train) -> tuple:
    recipe = write_recipe(tmp_path / f"{name}.yaml", {
        "base": str(RECIPES / "demo.yaml"),
        "model": {"special_tokens": ADDED},
        "data": {"sources": [{"path": str(RECIPES / "data" / "demo.jsonl"), "format": "jsonl", "name": "demo",
                              "cap": 48, "instructions": ["<|query|> Do the task below. <|answer|>",
                                                          "<|query|> Answer as asked. <|answer|>"]}]},
        "train": {"max_steps": 3, **train},
    })
    run = tmp_path / name
    proc = medtune("train", str(recipe), "--run-dir", str(run),
                   *(f"{k}={v}" for k, v in (overrides or {}).items()))
    return run, proc


@pytest.mark.slow
def test_two_added_tokens_train_under_zero3_export_1002_rows_and_generate_batched(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, proc = _run(tmp_path, "trained")
    said = proc.stdout + proc.stderr + "".join(f.read_text(errors="replace") for f in (run / "logs").glob("*"))
    assert "the model grows from 1000 to 1002 rows" in said
    losses = [m["train/loss"] for m in metrics(run) if "train/loss" in m]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    out = run / "export"
    weights = load_weights(out)
    assert tuple(weights["model.embed_tokens.weight"].shape) == (1002, 64)
    assert tuple(weights["lm_head.weight"].shape) == (1002, 64)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 1002
    # the saved ZeRO-3 checkpoint exports in one process with the same rows
    medtune("export", str(run), "--out", str(tmp_path / "again"))
    again = load_weights(tmp_path / "again")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(again[name], weights[name]), name

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert len(tok) == 1002 and tok.convert_tokens_to_ids(ADDED) == [1000, 1001]
    assert tok.padding_side == "left" and tok.pad_token is not None
    prompts = ["### Instruction: <|query|> Tag it. <|answer|>\n ### Input: fever\n ### Output:",
               "### Instruction: <|query|> Answer yes, no or maybe. <|answer|>\n ### Input: Is aspirin an "
               "analgesic used for pain and fever in adults?\n ### Output:"]
    batch = tok(prompts, padding=True, return_tensors="pt")
    assert batch.attention_mask[0].sum() < batch.attention_mask[1].sum()  # padded, on the left
    with torch.no_grad():
        together = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        for row, text in enumerate(prompts):
            alone = tok(text, return_tensors="pt")
            single = model.generate(**alone, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            width = batch.input_ids.shape[1]
            got = together[row, width:].tolist()
            want = single[0, alone.input_ids.shape[1]:].tolist()
            n = min(len(got), len(want))
            assert got[:n] == want[:n] and n > 0, (row, got, want)


@pytest.mark.slow
def test_new_rows_are_the_mean_of_the_old_after_zero3_partitioning(tmp_path):
    run, _ = _run(tmp_path, "still", lr=1e-30, warmup_steps=0, max_grad_norm=0.0)
    weights = load_weights(run / "export")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        w = weights[name].float()
        assert w.shape[0] == 1002
        mean, spread = w[:1000].mean(0), w[:1000].std(0)
        assert ((w[1000:] - mean).abs() <= 1e-3 * spread + 1e-7).all(), name
