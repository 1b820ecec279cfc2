"""Test-only faults injected into real medtune processes (ranks included): no product code reads them.

A test starts medtune with `tests.hooks.env(...)`, which puts this folder
first on ``PYTHONPATH`` and the wanted faults, as JSON, in
``MEDTUNE_TEST_HOOKS``. Python imports ``sitecustomize`` at the start of every
interpreter; when that variable is set, this module waits for
`medtune.engine.checkpoint`, `medtune.engine.trainer` and
`medtune.engine.evaluate` to be imported and
then replaces their ``HOOKS`` (the injection points the product code offers):

- ``fail_save_at``: step whose save fails on the last rank, after its shards
  are written, with what ``torch.save`` raises on a full disk;
- ``hold_save_at``: step whose save rank 0 stops in forever (after writing
  ``.held`` into the checkpoint folder), for the test to kill it mid-save;
- ``nan_at``: steps whose every micro-batch loss is made NaN;
- ``hold_eval_at``: step whose evaluation rank 0 stops in forever after its
  first validation pack (after writing ``RUN/.eval-held``), for the test to
  kill it mid-evaluation.
"""
from __future__ import annotations

import importlib.abc
import json
import os
import sys
import time

SPEC_ENV = "MEDTUNE_TEST_HOOKS"


def _save_hooks(checkpoint, spec: dict):
    class Faults(checkpoint.SaveHooks):
        def after_shards(self, step, folder, rank):
            last = int(os.environ.get("WORLD_SIZE", "1")) - 1
            if spec.get("fail_save_at") == step and rank == last:
                raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1472 vs 1364")
            if spec.get("hold_save_at") == step and rank == 0:
                (folder / ".held").write_text(str(os.getpid()))
                while True:  # the test kills us here, mid-save
                    time.sleep(1)
    return Faults()


def _train_hooks(trainer, spec: dict):
    poisoned = set(spec.get("nan_at", ()))

    class Faults(trainer.TrainHooks):
        def loss_hook(self, step):
            return (lambda summed: summed * float("nan")) if step in poisoned else None
    return Faults()


def _eval_hooks(evaluate, spec: dict):
    class Faults(evaluate.EvalHooks):
        def after_first_pack(self, step, run_dir, rank):
            if spec.get("hold_eval_at") == step and rank == 0:
                (run_dir / ".eval-held").write_text(str(os.getpid()))
                while True:  # the test kills us here, mid-evaluation
                    time.sleep(1)
    return Faults()


INSTALL = {"medtune.engine.checkpoint": _save_hooks, "medtune.engine.trainer": _train_hooks,
           "medtune.engine.evaluate": _eval_hooks}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of the modules in `INSTALL` to set their HOOKS once run."""

    def __init__(self, spec: dict):
        self.spec = spec

    def find_spec(self, fullname, path, target=None):
        if fullname not in INSTALL:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            found = finder.find_spec(fullname, path, target)
            if found is not None:
                run = found.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    module.HOOKS = INSTALL[fullname](module, self.spec)
                found.loader.exec_module = exec_module
                return found
        return None


if os.environ.get(SPEC_ENV):
    sys.meta_path.insert(0, _AfterImport(json.loads(os.environ[SPEC_ENV])))
