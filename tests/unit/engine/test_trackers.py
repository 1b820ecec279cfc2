"""logging.report_to: TensorBoard, W&B (offline) and MLflow (file store) get what metrics.jsonl gets."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from medtune import cli, config
from medtune.engine import trackers
from medtune.engine.metrics import MetricsLog
from tests.conftest import RECIPES

DEMO = str(RECIPES / "demo.yaml")


# ---- reading the trackers back (offline) -------------------------------------------------------

def wandb_records(run_dir: Path) -> list:
    """Every record of every offline W&B run file under RUN_DIR/wandb, oldest file first.

    A ``.wandb`` file is a 7-byte header (``:W&B``, magic 0xBEE1, version 0)
    then LevelDB's log format: 32 KiB blocks of chunks, each ``crc32c:u32
    length:u16 type:u8`` (1 full, 2 first, 3 middle, 4 last) holding a
    serialized ``wandb_internal_pb2.Record`` (wandb's former
    ``sdk/internal/datastore.py`` wrote and read it; wandb-core, in Go, now does).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B", path
        pos, block, buf = 7, 32768, b""
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:
                pos += left
                continue
            _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if kind == 0 and n == 0:
                break
            chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
            buf = chunk if kind in (1, 2) else buf + chunk
            if kind in (1, 4):
                rec = pb.Record()
                rec.ParseFromString(buf)
                out.append(rec)
                buf = b""
    return out


def wandb_history(run_dir: Path) -> dict[int, dict]:
    """``{step: {metric: value}}`` of the offline W&B run(s) (a later file's value wins)."""
    rows: dict[int, dict] = {}
    for rec in wandb_records(run_dir):
        if rec.WhichOneof("record_type") == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            step = row.pop("_step")
            rows.setdefault(step, {}).update({k: v for k, v in row.items() if not k.startswith("_")})
    return rows


def wandb_config(run_dir: Path) -> dict:
    cfg = {}
    for rec in wandb_records(run_dir):
        if rec.WhichOneof("record_type") == "run":
            cfg.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif rec.WhichOneof("record_type") == "config":
            cfg.update({i.key: json.loads(i.value_json) for i in rec.config.update})
    cfg.pop("_wandb", None)
    return cfg


def wandb_ids(run_dir: Path) -> set[str]:
    return {rec.run.run_id for rec in wandb_records(run_dir) if rec.WhichOneof("record_type") == "run"}


def mlflow_series(run_dir: Path) -> tuple[dict, dict[str, list[tuple[int, float]]]]:
    """``(params, {metric: [(step, value), ...]})`` of the MLflow run named in RUN_DIR/trackers.json."""
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only then
    ids = json.loads((run_dir / trackers.IDS_FILE).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=ids["uri"])
    run = client.get_run(ids["id"])
    series = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(ids["id"], k),
                                                     key=lambda m: (m.step, m.timestamp))]
              for k in run.data.metrics}
    return run.data.params, series


def jsonl_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        step = row.pop("step")
        for k, v in row.items():
            out.setdefault(k, []).append((step, v))
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)


# ---- configuration -----------------------------------------------------------------------------

def test_report_to_defaults_to_tensorboard_and_the_old_switch_still_turns_it_off():
    assert trackers.selected(config.load(DEMO)) == ["tensorboard"]
    assert trackers.selected(config.load(DEMO, ["logging.tensorboard=false"])) == []
    r = config.load(DEMO, ["logging.report_to=[mlflow,tensorboard,mlflow]", "logging.tensorboard=false"])
    assert trackers.selected(r) == ["mlflow"]


def test_unknown_tracker_is_one_line_naming_the_key(tmp_path, capsys):
    code = cli.main(["train", DEMO, "--run-dir", str(tmp_path / "run"), "logging.report_to=[comet]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "logging.report_to.0" in err[0] and "'tensorboard', 'wandb' or 'mlflow'" in err[0]
    assert not (tmp_path / "run").exists()


def test_missing_client_is_one_line_with_the_pip_command_before_any_rank(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(trackers.CLIENTS, "wandb", ("medtune_no_such_client", "pip install 'medtune[wandb]'"))
    code = cli.main(["train", DEMO, "--run-dir", str(tmp_path / "run"), "logging.report_to=[tensorboard,wandb]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err == [f"medtune: error: {config.COMMAND_LINE}: logging.report_to: wandb is listed but its "
                   "client is not installed: pip install 'medtune[wandb]'"]
    assert not (tmp_path / "run").exists()


def test_flatten_gives_dotted_keys_of_the_resolved_recipe():
    flat = trackers.flatten(config.load(DEMO, ["train.lr=0.25"]))
    assert flat["train.lr"] == 0.25 and flat["name"] == "demo"
    assert flat["model.config.model_type"] == "llama"
    assert flat["data.sources.0.format"] == "jsonl"
    assert flat["data.sources.0.path"] == str(RECIPES / "data" / "demo.jsonl")  # resolved
    assert flat["train.adam_betas"] == (0.9, 0.999)
    assert trackers.flatten({"a": {"b": [1, 2], "c": {}}, "d": [{"e": 1}]}) == \
        {"a.b": [1, 2], "a.c": {}, "d.0.e": 1}


# ---- the series ------------------------------------------------------------------------------

def _log_steps(run: Path, recipe, steps, resume_step=0, value=lambda s: 1.0 / s):
    log = MetricsLog(run, 0, recipe, resume_step=resume_step)
    for s in steps:
        log.log(s, {"train/loss": value(s), "train/lr": 0.001 * s})
        if s % 2 == 0:
            log.log(s, {"eval/loss": 2.0 / s, "eval/ncbi-disease-test/f1": 0.5})
    log.close()


def test_every_metric_reaches_every_tracker_at_the_same_step(tmp_path, offline):
    run = tmp_path / "run"
    run.mkdir()
    recipe = config.load(DEMO, ["logging.report_to=[tensorboard,wandb,mlflow]", "train.lr=0.125"])
    _log_steps(run, recipe, range(1, 5))
    want = jsonl_series(run)
    assert set(want) == {"train/loss", "train/lr", "eval/loss", "eval/ncbi-disease-test/f1"}

    params, got = mlflow_series(run)
    assert got == want
    assert params["train.lr"] == "0.125" and params["name"] == "demo"
    assert params["run_dir"] == str(run.resolve())

    history = wandb_history(run)
    assert {k: [(s, history[s][k]) for s in sorted(history) if k in history[s]] for k in want} == want
    cfg = wandb_config(run)
    assert cfg["train.lr"] == 0.125 and cfg["model.config.model_type"] == "llama"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert {k: [(e.step, pytest.approx(e.value)) for e in acc.Scalars(k)] for k in want} == want


def test_resume_continues_the_same_tracker_runs(tmp_path, offline):
    """Killed after step 5 with a checkpoint at 4; resumed from 4: steps 5 and 6 come again, equal."""
    run = tmp_path / "run"
    run.mkdir()
    recipe = config.load(DEMO, ["logging.report_to=[wandb,mlflow]"])
    _log_steps(run, recipe, range(1, 6))
    first = json.loads((run / trackers.IDS_FILE).read_text())
    _log_steps(run, recipe, range(5, 7), resume_step=4)
    assert json.loads((run / trackers.IDS_FILE).read_text()) == first  # the same runs continued
    want = jsonl_series(run)
    assert [s for s, _ in want["train/loss"]] == [1, 2, 3, 4, 5, 6]

    _, got = mlflow_series(run)
    latest = {k: sorted({s: v for s, v in pts}.items()) for k, pts in got.items()}  # later wins
    assert latest == want
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4, 5, 5, 6]  # step 5 twice: killed, resumed

    assert wandb_ids(run) == {first["wandb"]["id"]}
    history = wandb_history(run)
    assert [(s, history[s]["train/loss"]) for s in sorted(history)] == want["train/loss"]


def test_a_fresh_start_begins_new_tracker_runs(tmp_path, offline):
    run = tmp_path / "run"
    run.mkdir()
    recipe = config.load(DEMO, ["logging.report_to=[mlflow]"])
    _log_steps(run, recipe, range(1, 3))
    first = json.loads((run / trackers.IDS_FILE).read_text())
    _log_steps(run, recipe, range(1, 3), resume_step=0)
    second = json.loads((run / trackers.IDS_FILE).read_text())
    assert second["mlflow"]["id"] != first["mlflow"]["id"]
    _, got = mlflow_series(run)
    assert got == jsonl_series(run)


def test_other_ranks_open_no_tracker(tmp_path, offline):
    recipe = config.load(DEMO, ["logging.report_to=[tensorboard,wandb,mlflow]"])
    log = MetricsLog(tmp_path, 1, recipe)
    log.log(1, {"train/loss": 1.0})
    log.close()
    assert list(tmp_path.iterdir()) == []


# ---- public reports turned into inputs ---------------------------------------------------------

def test_a_config_value_over_mlflows_limit_neither_stops_the_run_nor_loses_metrics(tmp_path, offline):
    """transformers#9210 / Lightning#5892 / mlflow#10512: a parameter longer than MLflow's limit
    (a nested config sent as one string) raised MlflowException and broke training. medtune sends
    dotted leaves; a leaf still too long (a 1,000-layer ``layer_types`` list) is cut by MLflow 3."""
    run = tmp_path / "run"
    run.mkdir()
    layers = ["full_attention"] * 1000
    recipe = config.load(DEMO, ["logging.report_to=[mlflow,wandb]",
                                f"model.config.layer_types=[{','.join(layers)}]"])
    _log_steps(run, recipe, range(1, 3))
    params, got = mlflow_series(run)
    assert got == jsonl_series(run)
    assert len(json.dumps(layers)) > 6000 and params["model.config.layer_types"] == json.dumps(layers)[:6000]
    assert wandb_config(run)["model.config.layer_types"] == layers


def test_a_resume_with_a_changed_recipe_keeps_the_first_config(tmp_path, offline):
    """transformers#9210's second failure, and MLflow's rule that a logged param never changes: a run
    resumed with ``--allow-changed`` (another lr) must not re-log the config, or MLflow refuses it."""
    run = tmp_path / "run"
    run.mkdir()
    _log_steps(run, config.load(DEMO, ["logging.report_to=[mlflow,wandb]", "train.lr=0.5"]), range(1, 4))
    _log_steps(run, config.load(DEMO, ["logging.report_to=[mlflow,wandb]", "train.lr=0.25"]), range(3, 5),
               resume_step=2)
    params, got = mlflow_series(run)
    assert params["train.lr"] == "0.5"
    assert wandb_config(run)["train.lr"] == 0.5
    assert {k: sorted(dict(v).items()) for k, v in got.items()} == jsonl_series(run)


def test_a_failing_tracker_is_dropped_in_one_line_and_the_run_goes_on(tmp_path, offline, monkeypatch, capsys):
    """transformers#8849 (a comment): a tracking callback whose backend stopped answering ended
    training after hours. Under ZeRO-3 rank 0 raising alone would also leave the other ranks waiting
    in a collective: a failing tracker is reported once and dropped."""
    run = tmp_path / "run"
    run.mkdir()

    def refuse(self, step, scalars):
        if step == 2:
            raise ConnectionError("tracking server unreachable\nsecond line")
        return real(self, step, scalars)
    real = trackers.MLflow.log
    monkeypatch.setattr(trackers.MLflow, "log", refuse)
    _log_steps(run, config.load(DEMO, ["logging.report_to=[mlflow,wandb]"]), range(1, 4))
    err = [line for line in capsys.readouterr().err.splitlines() if "[medtune]" in line]
    assert err == ["[medtune] mlflow: logging step 2 failed (tracking server unreachable); no longer "
                   "logging to it, metrics.jsonl has every metric"]
    want = jsonl_series(run)
    assert [s for s, _ in want["train/loss"]] == [1, 2, 3]
    _, got = mlflow_series(run)
    assert got["train/loss"] == want["train/loss"][:1]
    history = wandb_history(run)
    assert [(s, history[s]["train/loss"]) for s in sorted(history)] == want["train/loss"]
