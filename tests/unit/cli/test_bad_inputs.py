"""The table of bad inputs: every kind a user brings, one line each, exit 2, nothing written touched.

Each row is an input a real user could give (recipes, overrides, hostfiles,
data rows, command-line arguments, model locations, DeepSpeed JSON files)
and the words its error must hold: the file (or ``command line``) and the key
or line at fault. For every row, in one process through `medtune.cli.main`:

- exit code 2 (`medtune.base.exitcodes.USAGE`);
- exactly one line on stderr, ``medtune: error: ...``, holding every word;
- nothing already written changed: every file of a previous run directory
  (checkpoint, recipe, metrics) and of the data cache is byte for byte as
  before and still there, nothing is added to the run directories (a trained
  tokenizer or a good source's tokens may join the cache: that adds, it
  overwrites nothing), and no new run directory appears.

More rows of one kind live beside their code (``test_config.BAD``,
``test_bad_data_table``, ``test_hostfile``, ``test_zero``); this table holds
at least one of every kind so a new kind of input joins it here.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from medtune import cli
from medtune.base import exitcodes
from tests.conftest import RECIPES

DEMO_DATA = str(RECIPES / "data" / "demo.jsonl")
MODEL = {"config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                    "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 1000,
                    "max_position_embeddings": 1024},
         "train_tokenizer": {"vocab_size": 1000}, "dtype": "fp32"}
GOOD = {"model": MODEL, "data": {"sources": [{"path": DEMO_DATA, "format": "jsonl"}], "max_tokens": 512},
        "launch": {"procs": 2}}
INSTR = '{"instruction": "Is it?", "input": "x", "output": "yes"}'


def _recipe(tmp: Path, tree_or_text, name: str = "r.yaml") -> Path:
    p = tmp / name
    p.write_text(tree_or_text if isinstance(tree_or_text, str) else yaml.safe_dump(tree_or_text,
                                                                                sort_keys=False))
    return p


def _with(**sections) -> dict:
    tree = json.loads(json.dumps(GOOD))
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(tree.get(k), dict):
            tree[k].update(v)
        else:
            tree[k] = v
    return tree


def _data(tmp: Path, text: str | bytes, name: str = "d.jsonl", fmt: str = "jsonl", **data) -> Path:
    f = tmp / name
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return _recipe(tmp, _with(data={"sources": [{"path": str(f), "format": fmt}], **data}))


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _ds(tmp: Path, block: dict | str) -> Path:
    f = tmp / "ds.json"
    f.write_text(block if isinstance(block, str) else json.dumps(block))
    return _recipe(tmp, _with(zero={"deepspeed_config": str(f)}))


def _hostfile(tmp: Path, text: str | bytes) -> Path:
    f = tmp / "hostfile"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


ZERO3 = {"zero_optimization": {"stage": 3}}


def _train(r: Path, tmp: Path, *more: str) -> list[str]:
    return ["train", str(r), "--run-dir", str(tmp / "runs" / "new"), *more]


def _launch(tmp: Path, hostfile: Path, *more: str) -> list[str]:
    r = _recipe(tmp, _with(launch={"procs": 1, "nodes": 1}))
    return ["launch", str(r), "--hostfile", str(hostfile), "--dry-run", "--run-dir",
            str(tmp / "runs" / "new"), *more]


# (id, build(tmp) -> (argv, words the one line must hold)); {f} in a word is the file of the row
ROWS = [
    # --- recipes ---------------------------------------------------------------------------
    ("recipe: second train block",
     lambda t: (_train(p := _recipe(t, "train:\n  epochs: 2\ntrain:\n  lr: 1.0e-4\n" +
                                    yaml.safe_dump({k: v for k, v in GOOD.items()})), t),
                [str(p), "duplicate key 'train'", "line 1"])),
    ("recipe: repeated data.max_tokens",
     lambda t: (_train(p := _recipe(t, yaml.safe_dump(GOOD).replace("max_tokens: 512",
                                                                     "max_tokens: 512\n  max_tokens: 64")), t),
                [str(p), "data.max_tokens"])),
    ("recipe: misspelt key", lambda t: (_train(p := _recipe(t, _with(train={"epoch": 2})), t),
                                        [str(p), "did you mean 'epochs'?"])),
    ("recipe: wrong type", lambda t: (_train(p := _recipe(t, _with(train={"lr": "fast"})), t),
                                      [str(p), "train.lr"])),
    ("recipe: missing base", lambda t: (_train(p := _recipe(t, {**GOOD, "base": "nowhere.yaml"}), t),
                                        [str(p), "nowhere.yaml does not exist"])),
    ("recipe: bad YAML", lambda t: (_train(p := _recipe(t, "model: [unclosed\n"), t), [str(p), "YAML"])),
    ("recipe: not a mapping", lambda t: (_train(p := _recipe(t, "- a\n- b\n"), t), [str(p)])),
    ("recipe: file missing", lambda t: (_train(t / "absent.yaml", t), [str(t / "absent.yaml")])),
    ("override: unknown key", lambda t: (_train(_recipe(t, GOOD), t, "train.epoch=2"),
                                         ["command line", "epochs"])),
    ("override: no value", lambda t: (_train(_recipe(t, GOOD), t, "train.lr="), ["command line", "train.lr"])),
    ("override: bad value", lambda t: (_train(_recipe(t, GOOD), t, "train.max_grad_norm=-1"),
                                       ["command line", "train.max_grad_norm"])),
    ("override: repeated key in a value",
     lambda t: (_train(_recipe(t, GOOD), t, "train={lr: 1, lr: 2}"), ["command line", "lr"])),
    # --- hostfiles --------------------------------------------------------------------------
    ("hostfile: spaces around =", lambda t: (_launch(t, h := _hostfile(t, "localhost slots = 1\n")),
                                             [str(h), ":1", "slots=1"])),
    ("hostfile: slots=0", lambda t: (_launch(t, h := _hostfile(t, "node-a slots=0\n")), [str(h), ":1"])),
    ("hostfile: non-numeric slots", lambda t: (_launch(t, h := _hostfile(t, "node-a slots=many\n")),
                                               [str(h), ":1"])),
    ("hostfile: host twice", lambda t: (_launch(t, h := _hostfile(t, "node-a slots=1\nnode-a slots=1\n")),
                                        [str(h), ":2", "node-a"])),
    ("hostfile: empty", lambda t: (_launch(t, h := _hostfile(t, "# nothing\n\n")), [str(h)])),
    ("hostfile: missing", lambda t: (_launch(t, t / "no-hostfile"), [str(t / "no-hostfile")])),
    ("hostfile: BOM", lambda t: (_launch(t, h := _hostfile(t, b"\xef\xbb\xbfnode-a slots=1\n")),
                                 [str(h), ":1"])),
    ("hostfile: too few slots for the recipe",
     lambda t: (["launch", str(_recipe(t, _with(launch={"procs": 2, "nodes": 1}))), "--hostfile",
                 str(h := _hostfile(t, "node-a slots=1\n")), "--dry-run"], [str(h), "launch.procs"])),
    # --- data rows --------------------------------------------------------------------------
    ("data: every row bad JSON", lambda t: (["prepare", str(_data(t, "{oops\n{oops\n"))],
                                            [str(t / "d.jsonl") + ":1", "no usable samples"])),
    ("data: output an integer", lambda t: (["prepare", str(_data(t, '{"instruction": "a", "output": 3}\n'))],
                                           [str(t / "d.jsonl") + ":1", "'output'"])),
    ("data: messages column only",
     lambda t: (["prepare", str(_data(t, '{"messages": [{"role": "user", "content": "hi"}]}\n'))],
                [str(t / "d.jsonl") + ":1", "messages"])),
    ("data: not UTF-8", lambda t: (["prepare", str(_data(t, INSTR.replace("x", "\xe9").encode("latin-1")))],
                                   [str(t / "d.jsonl") + ":1", "not UTF-8"])),
    ("data: UTF-16 file", lambda t: (["prepare", str(_data(t, (INSTR + "\n").encode("utf-16")))],
                                     [str(t / "d.jsonl") + ":1", "not UTF-8"])),
    ("data: strict with one bad row",
     lambda t: (["prepare", str(_data(t, INSTR + "\n" + '{"instruction": 1}\n', strict=True))],
                [str(t / "d.jsonl") + ":2"])),
    ("data: missing file", lambda t: (["prepare", str(_recipe(t, _with(
        data={"sources": [{"path": str(t / "gone.jsonl"), "format": "jsonl"}]})))],
        [str(t / "gone.jsonl"), "data.sources.0.path"])),
    ("data: unknown reader", lambda t: (["prepare", str(_data(t, INSTR + "\n", fmt="jsonll"))],
                                        ["data.sources.0.format", "jsonl"])),
    ("data: messages, strict, an empty conversation",
     lambda t: (["prepare", str(_data(t, '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
                                         '"content": "hello"}]}\n{"messages": []}\n', fmt="messages",
                                         strict=True))],
                [str(t / "d.jsonl") + ": row 2", "empty conversation"])),
    ("data: sharegpt turn of an unknown role",
     lambda t: (["prepare", str(_data(t, json.dumps([{"conversations": [{"from": "human", "value": "hi"},
                                                                          {"from": "function_call", "value": "f()"}]}]),
                                      name="d.json", fmt="sharegpt"))],
                [str(t / "d.json") + ": row 1", "unknown from 'function_call'", "no usable samples"])),
    ("data: a parquet file without the mapped column",
     lambda t: (["prepare", str(_recipe(t, _with(data={"sources": [{
         "path": str(_parquet(t / "qa.parquet", [{"question": "q?", "reply": "a"}])), "format": "hub",
         "columns": {"input": "question", "output": "answer"}, "instruction": "Answer."}]})))],
                [str(t / "qa.parquet"), "no column 'answer' (columns: question, reply)", "data.sources.0"])),
    ("data: template chat on a tokenizer without one",
     lambda t: (["prepare", str(_data(t, INSTR + "\n", template="chat"))],
                ["data.template = chat", "has no chat template", "data.chat_template"])),
    ("data: conll row without a tag",
     lambda t: (["prepare", str(_data(t, "Aspirin\tB\nworks\n\n", name="c.tsv", fmt="conll"))],
                [str(t / "c.tsv") + ":2"])),
    # --- command-line arguments ------------------------------------------------------------
    ("cli: unknown flag", lambda t: (_train(_recipe(t, GOOD), t, "--frobnicate"), ["--frobnicate"])),
    ("cli: not a number", lambda t: (["plan", str(_recipe(t, GOOD)), "--nodes", "two", "--gpus-per-node", "8"],
                                     ["--nodes", "two"])),
    ("cli: export of no checkpoint", lambda t: (["export", str(t / "runs" / "missing"), "--out",
                                                 str(t / "runs" / "out")], [str(t / "runs" / "missing")])),
    ("cli: export --best of a run without a best checkpoint",
     lambda t: (["export", str(t / "runs" / "prev"), "--best", "--out", str(t / "runs" / "out")],
                [str(t / "runs" / "prev"), "--best", "checkpoints/best"])),
    ("recipe: best_metric of no known form",
     lambda t: (_train(p := _recipe(t, _with(data={**GOOD["data"], "validation": {"fraction": 0.05}},
                                             train={"eval_every": 5, "best_metric": "f1"})), t),
                [str(p), "train.best_metric", "eval/<set>/<metric>"])),
    ("cli: resume from a missing checkpoint",
     lambda t: (_train(_recipe(t, GOOD), t, "--resume", str(t / "nowhere")), [str(t / "nowhere")])),
    ("cli: resume none over checkpoints",
     lambda t: (["train", str(_recipe(t, GOOD)), "--run-dir", str(t / "runs" / "prev"), "--resume", "none"],
                [str(t / "runs" / "prev")])),
    ("cli: no_ssh without a node rank",
     lambda t: (_launch(t, _hostfile(t, "node-a slots=1\n"), "--launcher", "no_ssh"), ["--node-rank"])),
    ("cli: score a missing file",
     lambda t: (["score", str(t / "gen.jsonl"), "--recipe", str(RECIPES / "eval" / "shared-slice.yaml"),
                 "--out", str(t / "runs" / "out")], [str(t / "gen.jsonl")])),
    # --- model and tokenizer locations -------------------------------------------------------
    ("model: missing directory",
     lambda t: (_train(p := _recipe(t, {**GOOD, "model": {"name_or_path": str(t / "no-model")}}), t),
                [str(p), "model.name_or_path", str(t / "no-model")])),
    ("model: relative path not written yet",
     lambda t: (_train(p := _recipe(t, {**GOOD, "model": {"name_or_path": "./not-written-yet"}}), t),
                [str(p), "model.name_or_path"])),
    ("model: directory without config.json",
     lambda t: ((t / "empty-model").mkdir() or _train(p := _recipe(t, {
         **GOOD, "model": {"name_or_path": str(t / "empty-model")}}), t), [str(p), "config.json"])),
    # --- DeepSpeed JSON ----------------------------------------------------------------------
    ("deepspeed: stage 2", lambda t: (_train(_ds(t, {"zero_optimization": {"stage": 2}}), t),
                                      [str(t / "ds.json"), "zero_optimization.stage"])),
    ("deepspeed: scheduler block", lambda t: (_train(_ds(t, {**ZERO3, "scheduler": {"type": "WarmupLR"}}), t),
                                              [str(t / "ds.json"), "scheduler"])),
    ("deepspeed: fp16", lambda t: (_train(_ds(t, {**ZERO3, "fp16": {"enabled": True}}), t),
                                   [str(t / "ds.json"), "fp16"])),
    ("deepspeed: syntax error", lambda t: (_train(_ds(t, '{"zero_optimization": {"stage": 3,}}'), t),
                                           [str(t / "ds.json")])),
    ("deepspeed: file missing", lambda t: (_train(_recipe(t, _with(zero={"deepspeed_config": str(t / "x.json")})),
                                                  t), [str(t / "x.json")])),
    # --- lengths -----------------------------------------------------------------------------
    ("length: prompt longer than the model's context",
     lambda t: (["prepare", str(_recipe(t, _with(
         model={**MODEL, "config": {**MODEL["config"], "max_position_embeddings": 16}},
         data={"sources": [{"path": DEMO_DATA, "format": "jsonl"}], "max_tokens": 512, "overlong": "truncate"})))],
                ["16"])),
]


def _snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha1(f.read_bytes()).hexdigest()
    return out


@pytest.fixture
def written(tmp_path, medtune_cache):
    """A previous run directory and a data cache that already hold something."""
    prev = tmp_path / "runs" / "prev"
    ckpt = prev / "checkpoints" / "step-00000002"
    ckpt.mkdir(parents=True)
    (ckpt / "mp_rank_00_model_states.pt").write_bytes(os.urandom(256))
    (ckpt / "trainer_state.json").write_text('{"global_step": 2}')
    (ckpt / "COMPLETE").write_text("")
    (prev / "checkpoints" / "latest").write_text("step-00000002")
    (prev / "recipe.yaml").write_text(yaml.safe_dump(GOOD))
    (prev / "metrics.jsonl").write_text('{"step": 1, "train/loss": 6.9}\n')
    (medtune_cache / "marker").write_text("a cache entry")
    return lambda: _snapshot(tmp_path / "runs", medtune_cache)


def test_the_table_holds_at_least_forty_inputs_of_every_kind():
    kinds = {row[0].split(":")[0] for row in ROWS}
    assert len(ROWS) >= 40
    assert kinds == {"recipe", "override", "hostfile", "data", "cli", "model", "deepspeed", "length"}


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_nothing_written_changes(row, tmp_path, capsys, written,
                                                                    monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv, words = row[1](tmp_path)
    before = written()
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's errors leave through sys.exit
        code = stop.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == exitcodes.USAGE, (code, err)
    assert len(err) == 1, err
    assert err[0].startswith("medtune: error: "), err[0]
    for word in words:
        assert word in err[0], (word, err[0])
    after = written()
    changed = [f for f, digest in before.items() if after.get(f) != digest]
    assert not changed, f"already written and changed or removed: {changed}"
    runs = str(tmp_path / "runs")
    assert not [f for f in after if f.startswith(runs) and f not in before], "a run directory grew"
    assert not (tmp_path / "runs" / "new").exists() and not (tmp_path / "runs" / "out").exists()
