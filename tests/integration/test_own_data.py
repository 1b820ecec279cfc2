"""Bring your own data, for real: every format and file type in one mixture trains 2 steps under 2-rank ZeRO-3.

The mixture holds a source per row of `tests.unit.data.test_formats_tables.CASES`
(messages in jsonl, a JSON list, parquet, arrow, a saved dataset and a glob;
ShareGPT in JSON and parquet; prompt/completion in CSV, parquet and a split
folder; column-mapped CSV, parquet and JSON Lines), rendered through ChatML
from ``data.chat_template``. The export carries that template and stops on
``<|im_end|>``, the token every assistant turn was trained to end with.
"""
from __future__ import annotations

import json

from tests.conftest import RECIPES
from tests.integration.helpers import medtune, metrics, write_recipe
from tests.unit.data.test_formats_tables import CASES, CHATML, _name, save_chatml_tokenizer, write_fixtures


def test_a_mixture_of_every_format_trains_two_steps_under_zero3(tmp_path):
    files = write_fixtures(tmp_path)
    tok = save_chatml_tokenizer(tmp_path / "chatml-tok")
    sources = [{"name": _name(c), "path": str(files[c[0]]), "format": c[1], **c[2]} for c in CASES]
    recipe = write_recipe(tmp_path / "own.yaml", {
        "base": str(RECIPES / "models" / "tiny-llama.yaml"),
        "model": {"tokenizer": str(tok), "config": {"vocab_size": 1024}},
        "data": {"sources": sources, "template": "chat", "chat_template": str(CHATML),
                 "system_prompt": "You are a careful clinician.", "max_tokens": 256, "dedup": False},
        "train": {"max_steps": 2, "grad_accum": 1, "lr": 1e-3, "warmup_steps": 0},
        "launch": {"procs": 2},
        "logging": {"every": 1, "progress": False},
    })
    run = tmp_path / "run"
    proc = medtune("train", str(recipe), "--run-dir", str(run))
    steps = [m["step"] for m in metrics(run) if "train/loss" in m]
    assert steps == [1, 2], proc.stdout[-2000:]
    export = run / "export"
    cfg = json.loads((export / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(export)
    im_end = exported.convert_tokens_to_ids("<|im_end|>")
    assert im_end == 1001 and im_end in cfg["eos_token_id"]
    assert exported.chat_template == CHATML.read_text()
