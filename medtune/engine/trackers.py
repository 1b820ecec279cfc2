"""Experiment trackers: every scalar medtune logs, also in TensorBoard, W&B or MLflow.

``logging.report_to`` lists the trackers (default ``[tensorboard]``); the
official clients do the work, each an optional extra (``pip install
medtune[wandb]``, ``medtune[mlflow]``). `medtune.engine.metrics.MetricsLog`
(rank 0 only) hands each ``(step, scalars)`` it writes to ``metrics.jsonl`` to
every tracker at the same step, so their series are the file's series.

* **tensorboard**: ``RUN_DIR/tensorboard`` (``purge_step`` drops what a killed
  run logged after the step a resume starts from).
* **wandb**: project ``$WANDB_PROJECT`` (default ``medtune``), run name the
  recipe's ``name``, files under ``RUN_DIR/wandb``; ``WANDB_MODE=offline``
  and every other ``WANDB_*`` variable work as W&B documents them.
* **mlflow**: ``$MLFLOW_TRACKING_URI`` (default: the file store
  ``file:RUN_DIR/mlruns``), experiment ``$MLFLOW_EXPERIMENT_NAME`` (default
  ``medtune``), run name the recipe's ``name``.

The resolved recipe is the run's config, logged once when the run starts
afresh (`flatten`: ``{"train.lr": 3e-3, ...}``). The tracker run's id is kept
in ``RUN_DIR/trackers.json``, so a resumed medtune run continues the same W&B
run (``resume="allow"``) and the same MLflow run. A tracker cannot forget what
a killed run logged after its last checkpoint, as ``metrics.jsonl`` and
TensorBoard do: the resumed run logs those steps again. Resume is bit-exact,
so the training values repeat exactly (only timings differ); MLflow then holds
two points for such a step (the later is the resumed run's) and W&B keeps the
first (it ignores a step below its current one).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from medtune.config import Recipe, register_check

CLIENTS = {"wandb": ("wandb", "pip install 'medtune[wandb]'"),
           "mlflow": ("mlflow", "pip install 'medtune[mlflow]'")}
"""Tracker -> (module its client imports as, the command that installs it)."""

IDS_FILE = "trackers.json"
"""RUN_DIR file holding each tracker's run id, for resume."""


def selected(recipe: Recipe) -> list[str]:
    """The trackers a recipe logs to: ``logging.report_to`` in order, without repeats.

    ``logging.tensorboard: false`` (the older switch) takes TensorBoard out
    even when ``report_to`` lists it.
    """
    out = list(dict.fromkeys(recipe.logging.report_to))
    if not recipe.logging.tensorboard and "tensorboard" in out:
        out.remove("tensorboard")
    return out


@register_check
def check_clients(recipe: Recipe, check_files: bool = True) -> list[tuple[str, str]]:
    """A tracker whose client is not installed: ``(logging.report_to, message)`` naming the pip command.

    Registered with `medtune.config` (run by ``config.load`` before any rank
    starts); skipped with ``check_files=False`` (commands that do not train).
    """
    if not check_files:
        return []
    out = []
    for name in selected(recipe):
        if name in CLIENTS and importlib.util.find_spec(CLIENTS[name][0]) is None:
            out.append(("logging.report_to", f"{name} is listed but its client is not installed: "
                                             f"{CLIENTS[name][1]}"))
    return out


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """A nested recipe as one level of dotted keys: ``{"train": {"lr": 1}} -> {"train.lr": 1}``.

    Lists holding mappings get each index as a key part (``data.sources.0.path``);
    other lists, empty mappings and ``None`` stay values.
    """
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        tree = dataclasses.asdict(tree)
    if isinstance(tree, dict) and tree:
        items = tree.items()
    elif isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


class Tracker:
    """One tracker's client: `log` scalars at a step, `close` at the end."""

    name = "tracker"

    def log(self, step: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    name = "tensorboard"

    def __init__(self, run_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step + 1)

    def log(self, step, scalars):
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self):
        self.writer.close()


class WandB(Tracker):
    """A W&B run (``wandb.init``); resumed by id when the medtune run resumes."""

    name = "wandb"

    def __init__(self, run_dir: Path, name: str, config: dict, run_id: str | None):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "medtune"), name=name,
                              dir=str(run_dir), id=run_id, resume="allow" if run_id else None,
                              config=None if run_id else config)
        self.id = self.run.id

    def log(self, step, scalars):
        self.run.log(dict(scalars), step=step)

    def close(self):
        self.run.finish()


class MLflow(Tracker):
    """An MLflow run through `MlflowClient` (no global active run); resumed by run id."""

    name = "mlflow"
    MAX_PARAMS = 100  # per log_batch call (MLflow's limit)

    def __init__(self, run_dir: Path, name: str, config: dict, run_id: str | None, uri: str | None):
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"file:{(run_dir / 'mlruns').resolve()}"
        if uri.startswith("file:"):  # MLflow 3 refuses its file store unless asked for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client, self.uri = MlflowClient(tracking_uri=uri), uri
        if run_id is None:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "medtune")
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run_id = self.client.create_run(exp_id, run_name=name).info.run_id
            params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in config.items()]
            for i in range(0, len(params), self.MAX_PARAMS):
                self.client.log_batch(run_id, params=params[i:i + self.MAX_PARAMS])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.id = run_id

    def log(self, step, scalars):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])

    def close(self):
        self.client.set_terminated(self.id)


def open_all(recipe: Recipe, run_dir: Path, resume_step: int) -> list[Tracker]:
    """Start (or, when resuming past step 0, continue) every tracker of `recipe`; rank 0 only.

    Ids come from and go to ``RUN_DIR/trackers.json``. A run starting at step 0
    starts new tracker runs (nothing of an earlier attempt is kept in
    ``metrics.jsonl`` either).
    """
    names = selected(recipe)
    ids_path = run_dir / IDS_FILE
    saved = json.loads(ids_path.read_text()) if resume_step > 0 and ids_path.is_file() else {}
    config = flatten(recipe) if {"wandb", "mlflow"} & set(names) else {}
    config["run_dir"] = str(run_dir.resolve())
    out: dict[str, Tracker] = {}
    for name in names:
        try:
            if name == "tensorboard":
                out[name] = TensorBoard(run_dir, resume_step)
            elif name == "wandb":
                out[name] = WandB(run_dir, recipe.name, config, saved.get("wandb", {}).get("id"))
            elif name == "mlflow":
                prev = saved.get("mlflow", {})
                out[name] = MLflow(run_dir, recipe.name, config, prev.get("id"), prev.get("uri"))
        except Exception as err:  # noqa: BLE001 (a tracker service down or not logged in)
            failed(name, "could not start", err)
    ids = {n: v for n, v in saved.items() if n in names}  # one that failed to start now keeps its id
    ids.update({n: {"id": t.id, **({"uri": t.uri} if n == "mlflow" else {})}
                for n, t in out.items() if n != "tensorboard"})
    if ids:
        from medtune.base.fsutil import write_atomic

        write_atomic(ids_path, json.dumps(ids, indent=2) + "\n")
    return list(out.values())


def failed(name: str, what: str, err: BaseException) -> None:
    """One line on stderr for a tracker that failed (it is dropped; metrics.jsonl keeps everything)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"[medtune] {name}: {what} ({first}); no longer logging to it, metrics.jsonl has every metric",
          file=sys.stderr, flush=True)
