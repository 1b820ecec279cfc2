"""Everything decided once, before any rank starts: the run plan.

``preflight`` validates the recipe for a world of ranks (ZeRO choices, a
user DeepSpeed config, model and tokenizer locations, kernels), resolves the
ZeRO-3 plan (`medtune.engine.hierarchy`), prepares the data
(`medtune.data.prepare`: tokenizer training and tokenization happen here, so
no collective timeout can expire while ranks wait on them) and decides where
training starts (`medtune.engine.resume`). It writes the resolved recipe and
one `RunPlan` to ``RUN_DIR/run_plan.json``; every rank reads it (`read`) and
opens the prepared data it names (`open_data`) instead of deciding again.

``medtune train`` and ``medtune launch`` call `preflight` in-process; on
Slurm or MPI the first process runs::

    python -m medtune.engine.preflight --recipe R --run-dir D --world N \\
        [--resume auto|never|PATH] [--allow-changed]

exit 0: ranks may start; 3: nothing to do (the run finished with this very
recipe); 2: a user error (one line each). Torch-free: a recipe's quantized
ZeRO options or non-default kernels make it ask torch about this machine only
when the caller says to (``has_gpu``) or a model feature needs it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from medtune import config
from medtune.base import exitcodes
from medtune.base.errors import UserError, error_lines
from medtune.base.fsutil import write_atomic

PLAN = "run_plan.json"
RECIPE = "recipe.yaml"
NOTHING_TO_DO = 3
"""Exit code of the preflight command when the run finished with this recipe: start no rank."""
VERSION = 1


@dataclass(frozen=True)
class RunPlan:
    """What the ranks of one run start from; written by `preflight`, read by every rank.

    Shapes and units: ``world`` ranks; ``grad_accum`` micro-batches per rank
    per optimizer step; ``micro_batch`` packed rows per micro-batch (always 1:
    ``data.max_tokens`` sets its size); ``global_batch`` packed rows per
    optimizer step over all ranks (``world * grad_accum * micro_batch``). The
    DeepSpeed config (`medtune.engine.zero.build_config`) and the trainer take
    these, never the recipe's ``train.grad_accum`` (which a resumed run on
    another number of ranks overrides to keep the checkpoint's global batch).
    """
    recipe_file: str
    """The resolved recipe the ranks read (``RUN_DIR/recipe.yaml``)."""
    recipe_digest: str
    """sha256 of that file's bytes."""
    world: int
    zero: dict
    """`medtune.engine.hierarchy.ZeroPlan` as a dict."""
    data_path: str
    """The prepared data's cache directory (``arrow/`` and ``stats.json`` inside)."""
    data_fingerprint: str
    """Its cache key (`medtune.data.prepare.fingerprint`), also the Arrow dataset's fingerprint."""
    data_digest: str
    """What the run trained on (tokens and packing, `medtune.engine.resume.data_digest`)."""
    resume: str
    allow_changed: bool
    start: str | None
    """The checkpoint to resume from, or None (fresh)."""
    universal: str | None
    """Its universal form when the world size changed."""
    newest_checkpoint: str | None
    """The run directory's newest complete checkpoint when planned: a rank that finds another refuses
    a stale plan (e.g. a requeued job whose first step did not plan again)."""
    state: dict
    """`medtune.engine.checkpoint.TrainerState` to start with, as a dict."""
    grad_accum: int
    micro_batch: int
    global_batch: int
    version: int = VERSION

    def zero_plan(self):
        from medtune.engine.hierarchy import ZeroPlan

        return ZeroPlan(**self.zero)

    def trainer_state(self):
        from medtune.engine.checkpoint import TrainerState

        return TrainerState(**self.state)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def command(recipe_file: Path | str, run_dir: Path | str, world: int, resume: str = "auto",
            allow_changed: bool = False) -> list[str]:
    """The preflight command line (argv after ``python``) for a launcher's first process."""
    return (["-m", "medtune.engine.preflight", "--recipe", str(recipe_file), "--run-dir", str(run_dir),
             "--world", str(world), "--resume", resume] + (["--allow-changed"] if allow_changed else []))


# ---------------------------------------------------------------- the launcher's side

def validate(recipe: config.Recipe, where: Callable[[str], str], world: int, has_gpu: bool | None,
             weights: bool = True) -> None:
    """Every problem of `recipe` on `world` ranks that the launching process can see; `RecipeError`.

    The ZeRO choices (`validate_zero`), hub models and tokenizers neither
    cached nor reachable (`check_locations`), then kernels that cannot honour
    the model (`check_kernels`). `where` maps a dotted key to the file (or
    command line) that set it; `has_gpu` None means unknown here (the
    quantized options are then not checked).
    """
    validate_zero(recipe, where, world, has_gpu)
    check_locations(recipe, where, weights)
    check_kernels(recipe, where)


def validate_zero(recipe: config.Recipe, where: Callable[[str], str], world: int,
                  has_gpu: bool | None) -> None:
    """``zero.hierarchy``/``zero.quantized_*`` (`medtune.engine.hierarchy.problems`) and a user
    ``zero.deepspeed_config`` against the recipe on `world` ranks; `RecipeError` listing every problem."""
    from medtune.engine import hierarchy, zero

    found = hierarchy.problems(recipe, where, world, has_gpu)
    at = where("zero.deepspeed_config")
    try:
        found += [f"{at}: zero.deepspeed_config: {recipe.zero.deepspeed_config}: {zero.describe(key, msg)}"
                  for key, msg in zero.user_config_problems(recipe, world)]
    except config.RecipeError as err:
        found += [f"{at}: zero.deepspeed_config: {line}" for line in err.problems]
    if found:
        raise config.RecipeError(found)


def check_locations(recipe: config.Recipe, where: Callable[[str], str], weights: bool = True) -> None:
    """A hub model or tokenizer neither cached nor reachable (`medtune.models.locations`); `RecipeError`."""
    from medtune.models import locations

    found = [f"{where(key)}: {key}: {msg}" for key, msg in locations.problems(recipe, weights)]
    if found:
        raise config.RecipeError(found)


def check_kernels(recipe: config.Recipe, where: Callable[[str], str]) -> None:
    """Kernels that cannot honour the model (window, soft-cap, sinks, a logit transform); `RecipeError`."""
    k = recipe.kernels
    if k.attention == "auto" and k.loss == "standard":
        return
    from medtune.kernels.attention import model_features, refusal
    from medtune.kernels.loss import chunked_refusal
    from medtune.models.configs import hf_config

    try:
        cfg = hf_config(recipe.model)
    except OSError:  # not reachable from here (a login node without the hub): the ranks resolve kernels
        return
    for key, refused in (("attention", k.attention != "auto" and refusal(k.attention, model_features(cfg))),
                         ("loss", k.loss == "chunked" and chunked_refusal(cfg))):
        if refused:
            raise config.RecipeError([f"{where('kernels.' + key)}: {refused}"])


def preflight(recipe: config.Recipe, recipe_file: str, run_dir: Path, world: int, resume: str = "auto",
              allow_changed: bool = False, *, has_gpu: bool | None = None,
              where: Callable[[str], str] | None = None, checked: bool = False,
              say: Callable[[str], None] | None = None) -> RunPlan | None:
    """Validate, resolve ZeRO, prepare the data and plan the resume once; write and return the `RunPlan`.

    Returns None (after saying so) when ``--resume auto`` finds the run in
    `run_dir` finished with this very recipe: nothing to do. `checked` skips
    `validate` (the caller ran it). Raises `RecipeError`/`UserError` (one
    line each) for a bad recipe or data, `ResumeError` for a resume that
    cannot be (a changed recipe, a world that cannot share the checkpoint's
    global batch, ``never`` over existing checkpoints). Nothing in `run_dir`
    is written before every check passed.
    """
    from medtune.data.prepare import prepare
    from medtune.engine import hierarchy, resume as policy
    from medtune.engine.checkpoint import finished, latest

    say = say or _say
    where = where or (lambda _key: recipe_file)
    if world < 1:
        raise UserError(f"--world {world}: must be at least 1")
    if not checked:
        validate(recipe, where, world, has_gpu)
    zplan = hierarchy.resolve(recipe, world, has_gpu, where=recipe_file)
    prepared = prepare(recipe, recipe_file, log=say)
    digest = policy.data_digest(prepared)
    done = finished(run_dir) if resume == "auto" and not allow_changed else None
    # a changed recipe is refused (naming the keys) before a finished run is reported
    decision = policy.plan_resume(recipe, run_dir, resume, allow_changed, digest, world,
                                  (lambda _m: None) if done else say)
    if done is not None:
        export = f", export {done['export']}" if done.get("export") else ""
        say(f"{run_dir} is complete: trained to step {done['step']} (checkpoint {done['checkpoint']}"
            f"{export}); nothing to do. To train again, give another --run-dir; to train on with a "
            "changed recipe, pass --allow-changed")
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = run_dir / RECIPE
    config.dump(recipe, resolved)
    newest = latest(run_dir)
    state = decision.state
    plan = RunPlan(str(resolved), file_digest(resolved), world, asdict(zplan), str(prepared.path),
                   prepared.fingerprint, digest, resume, allow_changed,
                   str(decision.start) if decision.start else None,
                   str(decision.universal) if decision.universal else None,
                   newest.name if newest else None, asdict(state), decision.grad_accum, 1,
                   state.packs_per_step)
    write_atomic(run_dir / PLAN, plan.to_json())
    return plan


def _say(msg: str) -> None:
    print(f"[medtune] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the ranks' side

def read(run_dir: Path, recipe_file: str, world: int) -> RunPlan:
    """The run plan a rank starts from; `UserError` (one line) when it is missing or not this run's.

    Not this run's: planned for another number of ranks, for another recipe
    file than the one the rank was given (its bytes' sha256), or stale (the
    run directory's newest checkpoint changed since it was planned).
    """
    from medtune.engine.checkpoint import latest

    path = run_dir / PLAN
    again = (f"run `python {' '.join(command(recipe_file, run_dir, world))}` first "
             "(medtune train and medtune launch do)")
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != VERSION or set(raw) != {f.name for f in fields(RunPlan)}:
            raise ValueError(f"not a version-{VERSION} run plan")
        plan = RunPlan(**raw)
    except FileNotFoundError:
        raise UserError(f"{path}: no run plan: the ranks start from one; {again}") from None
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: unreadable run plan ({err}); {again}") from None
    if plan.world != world:
        raise UserError(f"{path}: planned for {plan.world} ranks, but {world} started; {again}")
    try:
        got = file_digest(Path(recipe_file))
    except OSError as err:
        raise UserError(f"{recipe_file}: cannot read the recipe ({err.strerror or err})") from None
    if got != plan.recipe_digest:
        raise UserError(f"{path}: planned for the recipe {plan.recipe_file} (sha256 {plan.recipe_digest[:12]}), "
                        f"but the ranks read {recipe_file} (sha256 {got[:12]}); {again}")
    newest = latest(run_dir)
    if (newest.name if newest else None) != plan.newest_checkpoint:
        raise UserError(f"{path}: stale: planned when the newest checkpoint was {plan.newest_checkpoint}, "
                        f"now it is {newest.name if newest else None}; {again}")
    return plan


def recipe_of(plan: RunPlan) -> config.Recipe:
    """The resolved recipe the plan was made for: the schema only, no cross-checks again."""
    return config.Recipe(**config.read_yaml(plan.recipe_file))


def open_data(plan: RunPlan):
    """The prepared training dataset the plan names and its validation set (``data.validation``,
    else None), both `datasets.Dataset`; `UserError` when they are gone.

    No preparation: a rank never tokenizes, so no rank waits in a collective
    while another one builds the cache.
    """
    from datasets import load_from_disk

    where = Path(plan.data_path)
    rerun = ("rerun the launcher (medtune train/launch, or python -m medtune.engine.preflight): "
             "it prepares the data before any rank starts")
    if not (where / "stats.json").is_file():
        raise UserError(f"{where}: the prepared data the run plan names is missing (a cleared cache, or "
                        f"a node that does not share it); {rerun}")
    if where.name != plan.data_fingerprint:  # the cache names each build by its fingerprint
        raise UserError(f"{where}: not the prepared data {plan.data_fingerprint} the run plan names; {rerun}")
    held = where / "validation"
    return load_from_disk(str(where / "arrow")), (load_from_disk(str(held)) if held.is_dir() else None)


# ---------------------------------------------------------------- the command

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m medtune.engine.preflight",
                                description="Validate, prepare the data and plan the resume of a run once, "
                                            "before any rank starts; write RUN_DIR/run_plan.json. Exit 0: "
                                            "ranks may start; 3: nothing to do; 2: a user error.")
    p.add_argument("--recipe", required=True, help="the recipe (e.g. RUN_DIR/recipe.yaml)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--world", type=int, required=True, help="number of ranks that will start")
    p.add_argument("--resume", default="auto", metavar="auto|never|PATH")
    p.add_argument("--allow-changed", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """The preflight command; its exit code (0 start, 3 nothing to do, 2 user error)."""
    from medtune.engine import ds_compat

    args = _parser().parse_args(argv)
    try:
        ds_compat.check_version()  # the first process of a Slurm/MPI job: before any data work
        recipe = config.load(args.recipe)
        plan = preflight(recipe, args.recipe, Path(args.run_dir).resolve(), args.world, args.resume,
                         args.allow_changed)
    except UserError as err:  # RecipeError included: one line per problem
        print(error_lines(err), file=sys.stderr)
        return exitcodes.USAGE
    if plan is None:
        return NOTHING_TO_DO
    _say(f"run plan: {Path(args.run_dir).resolve() / PLAN} ({plan.world} ranks x {plan.grad_accum} "
         f"accumulation = {plan.global_batch} packs per step; "
         f"{'resume from ' + plan.start if plan.start else 'fresh start'})")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
