"""The ``medtune`` command: prepare | inspect | train | launch | slurm | plan | doctor | export.

Verbs import what they need inside, so ``medtune --help`` and recipe
validation never wait for torch, deepspeed or transformers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from medtune import config
from medtune.base import exitcodes
from medtune.base.errors import UserError, error_lines
from medtune.engine import ds_compat


class _Parser(argparse.ArgumentParser):
    """argparse with medtune's one-line errors (``medtune: error: ...``, exit 2) instead of a usage block."""

    def error(self, message: str):
        print(f"medtune: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(exitcodes.USAGE)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="medtune", description=__doc__.splitlines()[0])
    verbs = p.add_subparsers(dest="verb", required=True)

    prep = verbs.add_parser("prepare", help="read, tokenize and cache a recipe's data",
                            description="Build (or find in the cache) a recipe's tokenized data and print its "
                                        "statistics. A recipe without a model section (a data recipe) "
                                        "is tokenized with the tokenizer of recipes/models/tiny-llama.yaml.")
    prep.add_argument("recipe")
    prep.add_argument("overrides", nargs="*", metavar="key=value")
    prep.add_argument("--out", metavar="DIR", help="also write DIR/stats.json and DIR/lengths.png")

    train = verbs.add_parser("train", help="train a recipe on this machine's ranks")
    train.add_argument("recipe")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted recipe overrides, e.g. train.lr=2e-5")
    train.add_argument("--run-dir", help="run directory (default runs/<recipe name>: running the same "
                                         "command again resumes it)")
    _resume_args(train)
    _run_args(train)

    launch = verbs.add_parser("launch", help="train a recipe on the nodes of a hostfile")
    launch.add_argument("recipe")
    launch.add_argument("overrides", nargs="*", metavar="key=value")
    launch.add_argument("--hostfile", required=True, help="`HOST slots=N` lines (see hostfile.example)")
    launch.add_argument("--launcher", default="pdsh", choices=("pdsh", "openmpi", "mvapich", "no_ssh"))
    launch.add_argument("--master-addr", help="rendezvous address (default: first host)")
    launch.add_argument("--master-port", type=int, help="rendezvous port (default: a free one)")
    launch.add_argument("--node-rank", type=int, help="this node's index, with --launcher no_ssh")
    launch.add_argument("--run-dir", help="run directory on a file system every node sees "
                                          "(default runs/<recipe name>)")
    launch.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")
    _resume_args(launch)
    _run_args(launch)

    _slurm_parser(verbs)

    plan = verbs.add_parser("plan", help="per-GPU memory and communication of a recipe on N nodes of G GPUs")
    plan.add_argument("recipe")
    plan.add_argument("overrides", nargs="*", metavar="key=value")
    plan.add_argument("--nodes", type=int, required=True)
    plan.add_argument("--gpus-per-node", type=int, required=True)
    plan.add_argument("--gpu", choices=("a100", "h100", "h200"), default="a100",
                      help="GPU type: its memory, dense bf16 peak and NVLink bandwidth (default a100)")
    plan.add_argument("--gpu-mem", type=float, help="GiB per GPU (default: the --gpu's, 80 or 141)")
    plan.add_argument("--inter-node-gbps", type=float, default=200.0, metavar="Gb/s",
                      help="inter-node bandwidth of one node, all its NICs together, in gigaBITS per "
                           "second (default 200: one HDR InfiniBand NIC; a DGX H100 has 8 x 400)")
    plan.add_argument("--intra-node-gbps", type=float, metavar="Gb/s",
                      help="NVLink bandwidth of one GPU in gigaBITS per second (default: A100 4800 = "
                           "600 GB/s, H100/H200 7200 = 900 GB/s)")
    plan.add_argument("--mfu", type=float, default=0.5,
                      help="fraction of the dense bf16 peak the compute reaches (default 0.5)")
    plan.add_argument("--json", metavar="PATH", help="also write the communication plan as JSON")

    doctor = verbs.add_parser("doctor", help="what this node has; exit 1 on what would stop a launch")
    doctor.add_argument("--hostfile", help="also check the hostfile and ssh to each host")

    _export_parser(verbs)
    _inspect_parser(verbs)
    _eval_parser(verbs)
    return p


def _export_parser(verbs) -> None:
    exp = verbs.add_parser("export", help="write a Hugging Face export from a run or checkpoint")
    exp.add_argument("source", help="a run directory (its newest checkpoint) or a checkpoint directory")
    exp.add_argument("--out", required=True, help="export directory")
    exp.add_argument("--best", action="store_true",
                     help="export the run's best checkpoint (checkpoints/best, train.best_metric)")


def _inspect_parser(verbs) -> None:
    insp = verbs.add_parser("inspect", help="show a recipe resolved, its samples with the loss-bearing "
                                            "tokens marked, counts, lengths and packing; launch nothing")
    insp.add_argument("recipe")
    insp.add_argument("overrides", nargs="*", metavar="key=value")
    insp.add_argument("-n", type=int, default=2, metavar="N", help="samples shown per source (default 2)")


def _slurm_parser(verbs) -> None:
    slurm = verbs.add_parser("slurm", help="write (and submit) a Slurm batch script for a recipe")
    slurm.add_argument("recipe")
    slurm.add_argument("overrides", nargs="*", metavar="key=value")
    slurm.add_argument("--nodes", type=int, required=True)
    slurm.add_argument("--gpus-per-node", type=int, required=True,
                       help="GPUs (= ranks) per node; 0 for CPU ranks (launch.procs per node)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", help="time limit, e.g. 2-00:00:00")
    slurm.add_argument("--account")
    slurm.add_argument("--job-name", help="default: the recipe's name")
    slurm.add_argument("--grace", type=int, default=120,
                       help="seconds between Slurm's USR1 warning and the kill (default 120)")
    slurm.add_argument("--run-dir", help="run directory on a file system every node sees "
                                          "(default runs/<recipe name>)")
    slurm.add_argument("--out", help="where to write the script (default RUN_DIR/job.sbatch)")
    slurm.add_argument("--submit", action="store_true", help="submit it with sbatch and print the job id")
    slurm.add_argument("--dry-run", action="store_true",
                       help="print the batch script and what would be written and submitted; write nothing")
    _run_args(slurm)


def _eval_parser(verbs) -> None:
    ev = verbs.add_parser("eval", help="generate on held-out sets, score, and compare with the paper",
                          description="Generate with the training prompt format on the held-out sets "
                                      "of an evaluation recipe (recipes/eval/*.yaml), parse and score "
                                      "the answers, and write OUT/results.json and OUT/results.md. "
                                      "Under torchrun (RANK/WORLD_SIZE set) the ranks split the samples.")
    ev.add_argument("--model", required=True, help="a Hugging Face model directory (e.g. RUN_DIR/export)")
    ev.add_argument("--recipe", required=True, help="evaluation recipe, e.g. recipes/eval/shared-corpora.yaml")
    ev.add_argument("--out", default="eval-results", help="report directory (default eval-results)")
    ev.add_argument("--limit", type=int, help="score at most N samples per set")
    ev.add_argument("--sets", help="comma-separated set names to run (default: all the recipe's)")
    ev.add_argument("--max-new-tokens", type=int, help="override generation.max_new_tokens")
    ev.add_argument("--num-beams", type=int, help="override generation.num_beams (1: greedy)")
    ev.add_argument("--batch-size", type=int, help="override generation.batch_size")
    ev.add_argument("overrides", nargs="*", metavar="key=value",
                    help="dotted evaluation-recipe overrides, e.g. sets.0.limit=50 generation.num_beams=4")
    ev.add_argument("--seed-compat", action="store_true",
                    help="kept for old command lines: the seed's token-keyed NER score is always "
                         "reported now, beside the strict and lenient position-aligned scores")

    sc = verbs.add_parser("score", help="score a file of existing generations as `eval` would",
                          description="Score generations made elsewhere (another tool, an earlier run) "
                                      "against an evaluation recipe's held-out sets, without generating, "
                                      "and write OUT/results.json and OUT/results.md as `medtune eval` does. "
                                      "GENERATIONS.jsonl: one object per line with `set` (the set's name; "
                                      "optional for a single set), `index` (record number) or `input` "
                                      "(record text) or neither (file order), the generated text as "
                                      "`answer`, `output`, `prediction` or `predict`, and optionally "
                                      "`gold` or `label` (checked against the set).")
    sc.add_argument("generations", help="JSONL of generations, e.g. an earlier OUT/generations.jsonl")
    sc.add_argument("--recipe", required=True, help="evaluation recipe whose sets the file answers")
    sc.add_argument("--out", default="eval-results", help="report directory (default eval-results)")
    sc.add_argument("--limit", type=int, help="score at most the first N records per set")
    sc.add_argument("--sets", help="comma-separated set names to score (default: all the recipe's)")
    sc.add_argument("--model", help="the name the report gives the model (default: the file's path)")


def _resume_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", default="auto", metavar="auto|none|PATH",
                   help="auto: the run directory's newest complete checkpoint, else start fresh "
                        "(default); none: start fresh; PATH: that checkpoint or run directory")
    p.add_argument("--allow-changed", action="store_true",
                   help="resume even though training-relevant recipe fields or the data changed")


LAUNCHING = {"train", "launch", "slurm"}
"""Verbs that start ranks: the installed DeepSpeed is checked first (`medtune.engine.ds_compat`)."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    # overrides may come after options too: `train R --run-dir D train.lr=1e-4`
    if rest and hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
        args.overrides += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        verbs = {"prepare": _prepare, "inspect": _inspect, "train": _train, "launch": _launch, "slurm": _slurm,
                 "plan": _plan, "doctor": _doctor, "export": _export,
                 "eval": _eval, "score": _score}
        if args.verb in LAUNCHING:
            ds_compat.check_version()
        return verbs[args.verb](args)
    except UserError as err:  # RecipeError included: one line per problem
        print(error_lines(err), file=sys.stderr)
        return exitcodes.USAGE


def _run_args(p: argparse.ArgumentParser) -> None:
    """Flags of the verbs that start a run; each becomes a recipe override the ranks read."""
    p.add_argument("--peak-tflops", type=float, metavar="T",
                   help="peak dense TFLOP/s of one device, for MFU (default: the A100/H100/H200 "
                        "table; sets logging.peak_tflops)")
    p.add_argument("--comm-log", action="store_true",
                   help="write every rank's collectives per optimizer step (DeepSpeed's comms logger) "
                        "to RUN_DIR/comm/rank-N.jsonl; makes each collective blocking (sets "
                        "logging.comm_log)")


def _run_overrides(args) -> list[str]:
    out = []
    if getattr(args, "peak_tflops", None) is not None:
        out.append(f"logging.peak_tflops={args.peak_tflops}")
    if getattr(args, "comm_log", False):
        out.append("logging.comm_log=true")
    return out


def _where(args):
    """Which file set a dotted key: the command line for an override, else the recipe."""
    overridden = {o.split("=", 1)[0] for o in args.overrides}
    return lambda key: config.COMMAND_LINE if key in overridden else args.recipe


def _check_zero(args, recipe: config.Recipe, world: int, has_gpu: bool | None) -> None:
    """``zero.hierarchy``, ``zero.quantized_*`` and ``zero.deepspeed_config`` before any rank starts."""
    from medtune.engine.preflight import validate_zero

    validate_zero(recipe, _where(args), world, has_gpu)


def _check_locations(args, recipe: config.Recipe, weights: bool = True) -> None:
    """A hub model or tokenizer that is neither cached nor reachable, before any work (`medtune.models.locations`)."""
    from medtune.engine.preflight import check_locations

    check_locations(recipe, _where(args), weights)


def _check_kernels(args, recipe: config.Recipe) -> None:
    """Kernels that cannot honour the model (window, soft-cap, sinks, a logit transform), before any rank."""
    from medtune.engine.preflight import check_kernels

    check_kernels(recipe, _where(args))


def _local_gpu(recipe: config.Recipe) -> bool | None:
    """Whether this machine has a GPU, asked only when the recipe needs one (it imports torch)."""
    if not (recipe.zero.quantized_weights or recipe.zero.quantized_gradients):
        return None
    import torch

    return torch.cuda.is_available()


def _load(args) -> config.Recipe:
    args.overrides = [*args.overrides, *_run_overrides(args)]
    return config.load(args.recipe, args.overrides)


def _prepare(args) -> int:
    import shutil

    import datasets  # noqa: F401  (library start-up is not part of the data stage timed below)

    from medtune.data.prepare import prepare

    default_model = config.RECIPES_ROOT / "models" / "tiny-llama.yaml"
    recipe = config.load(args.recipe, args.overrides, defaults=[default_model])
    try:  # a data recipe (no model section) borrows the tiny model's tokenizer, not its context length
        config.load(args.recipe, args.overrides, check_files=False)
        names_model = True
    except config.RecipeError:
        names_model = False
    _check_locations(args, recipe, weights=False)
    began = time.perf_counter()
    prepared = prepare(recipe, args.recipe, model_context=names_model)
    took = time.perf_counter() - began
    s = prepared.stats
    print(f"{'cache hit' if prepared.cache_hit else 'built'}: {prepared.path} "
          f"(data stage {took:.2f}s)")
    print(_stats_table(s))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("stats.json", "lengths.png"):
            shutil.copyfile(prepared.path / name, out / name)
        print(f"wrote {out / 'stats.json'} and {out / 'lengths.png'}")
    return 0


def _inspect(args) -> int:
    from medtune.data.inspect import report

    report(args.recipe, args.overrides, n=args.n)
    return 0


def _stats_table(s: dict) -> str:
    """The per-source and per-task table `medtune prepare` prints."""
    cols = ("records", "malformed", "duplicates", "samples", "tokens", "truncated", "dropped")
    head = f"{'source':<24}" + "".join(f"{c:>11}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, st in s["sources"].items():
        lines.append(f"{name[:23]:<24}" + "".join(f"{st[c]:>11}" for c in cols))
    lines += ["", f"{'task':<24}{'samples':>11}{'tokens':>11}{'mean len':>11}{'max len':>11}"]
    for task, t in s["tasks"].items():
        lines.append(f"{task[:23]:<24}{t['samples']:>11}{t['tokens']:>11}{t['mean_length']:>11}"
                     f"{t['max_length']:>11}")
    lines.append(f"\n{s['samples']} samples, {s['tokens']} tokens ({s['label_tokens']} labelled), "
                 f"{s['packs']} packs of {s['max_tokens']}: packing fill {s['packing_fill']:.1%}")
    return "\n".join(lines)


def _train(args) -> int:
    from medtune.launcher import run

    recipe = _load(args)
    run_dir = run.run_directory(args.run_dir, recipe)
    if not _ready_to_start(args, recipe, run_dir, world=recipe.launch.procs, checked=False,
                           has_gpu=_local_gpu(recipe)):
        return exitcodes.OK
    return run.start(run.train_plan(recipe, run_dir, args.resume, args.allow_changed), run_dir)


def _launch(args) -> int:
    from medtune.launcher import run
    from medtune.launcher.plan import describe

    recipe = _load(args)
    run_dir = run.run_directory(args.run_dir, recipe)
    plan, first_rank = run.hostfile_plan(recipe, args.hostfile, args.launcher, run_dir, dict(os.environ),
                                         args.master_addr, args.master_port, args.node_rank,
                                         args.resume, args.allow_changed)
    _check_zero(args, recipe, recipe.launch.nodes * recipe.launch.procs, None)
    _check_locations(args, recipe)
    _check_kernels(args, recipe)
    if args.dry_run:
        print(describe(plan), end="")
        return exitcodes.OK
    if not _ready_to_start(args, recipe, run_dir, world=recipe.launch.nodes * recipe.launch.procs):
        return exitcodes.OK
    return run.start(plan, run_dir, first_rank)


def _slurm(args) -> int:
    from medtune.launcher import run
    from medtune.launcher.plan import describe, execute

    recipe = _load(args)
    procs = args.gpus_per_node or recipe.launch.procs
    # the job's shape is the command line's: record it in the recipe the ranks read
    recipe = config.load(args.recipe, [*args.overrides, f"launch.nodes={args.nodes}",
                                       f"launch.procs={procs}"])
    _check_zero(args, recipe, args.nodes * procs, False if args.gpus_per_node == 0 else None)
    _check_kernels(args, recipe)
    plan = run.slurm_plan(recipe, run.run_directory(args.run_dir, recipe), args.gpus_per_node,
                          job_name=args.job_name, partition=args.partition, time=args.time,
                          account=args.account, grace=args.grace, out=args.out, submit=args.submit)
    if args.dry_run:
        print(describe(plan), end="")
        return exitcodes.OK
    return execute(plan)


def _plan(args) -> int:
    from medtune.engine import hierarchy
    from medtune.planning import comm
    from medtune.models import configs
    from medtune.planning import memory

    recipe = config.load(args.recipe, args.overrides, check_files=False)
    if args.nodes < 1 or args.gpus_per_node < 1:
        raise UserError("--nodes and --gpus-per-node must be at least 1")
    if args.inter_node_gbps <= 0 or (args.intra_node_gbps or 1) <= 0 or not 0 < args.mfu <= 1:
        raise UserError("--inter-node-gbps and --intra-node-gbps must be above 0, --mfu in (0, 1]")
    cfg = configs.load_config(recipe.model)
    shape = memory.model_shape(cfg)
    print(memory.table(recipe, shape, args.nodes, args.gpus_per_node,
                     args.gpu_mem or comm.GPU_MEMORY_GIB[args.gpu]))
    links = comm.Links(args.nodes, args.gpus_per_node, args.inter_node_gbps,
                       args.intra_node_gbps or comm.NVLINK_GBPS[args.gpu])
    cp = comm.plan(recipe, cfg, links, args.gpu, args.mfu)
    print()
    print(comm.table(cp))
    for line in hierarchy.problems(recipe, args.recipe, links.world, None, ranks_per_node=args.gpus_per_node):
        print(f"note: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(comm.to_json(cp), indent=2))
    return exitcodes.OK


def _doctor(args) -> int:
    from medtune.launcher import doctor

    found = doctor.checks(Path(args.hostfile) if args.hostfile else None)
    print(doctor.table(found))
    return 1 if any(c.problem for c in found) else exitcodes.OK


def _ready_to_start(args, recipe: config.Recipe, run_dir: Path, world: int, checked: bool = True,
                    has_gpu: bool | None = None) -> bool:
    """The launcher's preflight (`medtune.engine.preflight`): once, here, before any rank starts.

    Tokenizer training and tokenization (a bad recipe or bad data fails
    here, and no collective timeout can expire while ranks wait on them),
    resume checks and a universal conversion for a new world size, the
    resolved recipe and the run plan every rank reads. Returns False (ranks
    need not start) when ``--resume auto`` finds the run in `run_dir`
    finished with this very recipe: it says so instead of training again.
    """
    from medtune.engine.preflight import preflight

    return preflight(recipe, args.recipe, run_dir, world, args.resume, args.allow_changed,
                     has_gpu=has_gpu, where=_where(args), checked=checked) is not None


def _export(args) -> int:
    from medtune.engine import checkpoint
    from medtune.engine.export import export_checkpoint

    src = Path(args.source).resolve()
    if args.best:
        ckpt, run_dir = checkpoint.best_checkpoint(src), src
        if ckpt is None:
            raise UserError(f"{src}: --best: no best checkpoint (a run directory whose checkpoints/best "
                            "names a complete checkpoint; train.best_metric records one)")
    elif (src / checkpoint.MARKER).is_file():
        ckpt, run_dir = src, src.parent.parent
    else:
        ckpt, run_dir = checkpoint.latest(src), src
        if ckpt is None:
            print(f"medtune: error: {src}: no complete checkpoint (a run directory with "
                  "checkpoints/step-*/COMPLETE, or such a checkpoint directory)", file=sys.stderr)
            return 2
    export_checkpoint(ckpt, run_dir, Path(args.out).resolve())
    print(f"exported {ckpt} -> {args.out} (verified)")
    return 0


def _eval(args) -> int:
    from medtune.evaluation import sets
    from medtune.evaluation.run import evaluate

    flags = (("max_new_tokens", args.max_new_tokens), ("num_beams", args.num_beams), ("batch_size", args.batch_size))
    overrides = [*args.overrides, *(f"generation.{k}={v}" for k, v in flags if v is not None)]
    recipe = sets.load(args.recipe, overrides)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be at least 1")
    only = [x.strip() for x in args.sets.split(",") if x.strip()] if args.sets else None
    out = Path(args.out).resolve()
    results = evaluate(args.model, recipe, out, args.recipe, args.limit, only)
    if results is not None:
        print((out / "results.md").read_text())
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return exitcodes.OK


def _score(args) -> int:
    from medtune.evaluation import sets
    from medtune.evaluation.run import score

    recipe = sets.load(args.recipe)
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be at least 1")
    only = [x.strip() for x in args.sets.split(",") if x.strip()] if args.sets else None
    out = Path(args.out).resolve()
    score(args.generations, recipe, out, args.recipe, args.limit, only, args.model)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
