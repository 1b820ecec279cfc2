"""The entry every rank runs: ``python -m medtune.engine.main --recipe R --run-dir D``."""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

from medtune import config
from medtune.engine import hierarchy
from medtune.base import exitcodes
from medtune.base.errors import UserError
from medtune.base.ranks import RankEnv, discover


@dataclass
class Rank:
    """Who this rank is and what it decided before any process group exists."""
    recipe: config.Recipe
    recipe_path: str
    run: Path
    me: RankEnv
    say: Callable[[str], None]
    stop: dict                 # {"signum": N}: set by SIGTERM/SIGUSR1 (see `_stop_on`)
    on_gpu: bool
    plan: object               # preflight.RunPlan: ZeRO plan, data, resume decision, batch shape
    dataset: object            # datasets.Dataset: the prepared data the plan names
    validation: object = None  # datasets.Dataset of data.validation, or None

    @property
    def start(self) -> Path | None:
        """The checkpoint to resume from, or None (fresh)."""
        return Path(self.plan.start) if self.plan.start else None

    @property
    def universal(self) -> Path | None:
        """The checkpoint's universal form when the world size changed."""
        return Path(self.plan.universal) if self.plan.universal else None


@dataclass
class Training:
    """What `build` returns and `_train` runs: the DeepSpeed engine and everything around it."""
    engine: object             # deepspeed.DeepSpeedEngine
    data: object               # medtune.data.packed.PackedData
    state: object              # checkpoint.TrainerState (the checkpoint's, when resuming)
    kernels: object            # trainer.Kernels
    perf: object               # metrics.Throughput
    validation: object = None  # medtune.data.packed.PackedData of data.validation, or None
    tokenizer: object = None


def main(recipe_path: str, run_dir: str, resume: str = "auto", allow_changed: bool = False) -> int:
    """Build, resume, train, export and always clean up, on one rank; the rank's exit code.

    `resume` and `allow_changed` are the launcher's: its preflight decided the
    resume (``RUN_DIR/run_plan.json``), the ranks only follow the plan.
    """
    del resume, allow_changed
    r = _set_up(recipe_path, Path(run_dir))
    import deepspeed.comm as dist

    _init_distributed(r)
    log = None
    try:
        from medtune.engine.metrics import MetricsLog

        t = build(r)
        log = MetricsLog(r.run, r.me.rank, r.recipe, resume_step=t.state.global_step)
        return _train(r, t, log)
    finally:
        if log is not None:
            try:
                log.close()
            except OSError as err:  # a full disk: the ranks must still leave together
                r.say(f"closing the metrics logs failed ({err})")
        dist.barrier()
        dist.destroy_process_group()


def _set_up(recipe_path: str, run: Path) -> Rank:
    """This rank's environment and the launcher's run plan (`medtune.engine.preflight`): no decision
    is taken again here, no recipe cross-check, data preparation or resume planning."""
    from medtune.engine import preflight

    me = discover()
    plan = preflight.read(run, recipe_path, me.world)
    recipe = preflight.recipe_of(plan)
    os.environ.update(me.export())
    threads = recipe.launch.threads_per_proc or max(1, (os.cpu_count() or 1) // me.local_world)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    stop = _stop_on((signal.SIGTERM, signal.SIGUSR1))

    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    torch.set_num_threads(threads)
    say = _say(me.rank)
    say(f"run plan: {run / preflight.PLAN}")
    zplan = plan.zero_plan()
    if not on_gpu and (zplan.quantized_weights or zplan.quantized_gradients):  # a fact of this node
        raise UserError(f"{recipe_path}: zero.quantized_weights/zero.quantized_gradients run only on "
                        "CUDA GPUs and this node has none")
    say(zplan.describe())
    dataset, validation = preflight.open_data(plan)
    if me.rank == 0:  # this run trains on: no longer finished until it ends again
        from medtune.engine import checkpoint

        (run / checkpoint.FINISHED).unlink(missing_ok=True)
    return Rank(recipe, recipe_path, run, me, say, stop, on_gpu, plan, dataset, validation)


def _init_distributed(r: Rank) -> None:
    """The process group: NCCL on GPUs, gloo on CPUs, with the recipe's collective timeout."""
    import deepspeed
    import torch

    if r.on_gpu:
        torch.cuda.set_device(r.me.local_rank)
    else:
        # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce that only its
        # inference path uses: minutes of compiling on a fresh machine, and a /dev/shm
        # buffer per rank that outlives any rank that is killed. Training never needs it.
        from medtune.engine import ds_compat

        ds_compat.disable_shm_comm()
    deepspeed.init_distributed(dist_backend="nccl" if r.on_gpu else "gloo", auto_mpi_discovery=False,
                               timeout=timedelta(minutes=r.recipe.launch.timeout_minutes))


def build(r: Rank) -> Training:
    """Tokenizer, kernels, model, packed data, optimizer and DeepSpeed engine, resumed if planned.

    Raises `RecipeError` when the tokenizer has more tokens than the model's
    vocabulary, `UserError` when the recipe's kernels cannot run here or let
    packed samples see each other.
    """
    import deepspeed
    import torch
    from transformers import set_seed

    from medtune.data.packed import PackedData
    from medtune.data.tokenize import stop_token_ids
    from medtune.data.tokenizer import add_tokens, load_base
    from medtune.engine import checkpoint, model, trainer, zero
    from medtune.models import configs
    from medtune.engine.metrics import Throughput
    from medtune.models.flops import FlopModel, peak_tflops

    recipe, me, on_gpu, say, plan = r.recipe, r.me, r.on_gpu, r.say, r.plan
    state = plan.trainer_state()
    set_seed(recipe.train.seed)
    tokenizer = load_base(recipe)
    added = add_tokens(tokenizer, recipe.model)
    bf16 = recipe.model.dtype == "bf16" or (recipe.model.dtype == "auto" and on_gpu
                                            and torch.cuda.is_bf16_supported())
    hf_cfg = configs.hf_config(recipe.model)
    if len(tokenizer) - len(added) > hf_cfg.vocab_size:
        raise config.RecipeError([f"{r.recipe_path}: model: the tokenizer has {len(tokenizer) - len(added)} "
                                  f"tokens but the model's vocab_size is {hf_cfg.vocab_size}"])
    # tokens the recipe added beyond the model's rows grow its embedding and output layers
    vocab_rows = len(tokenizer) if len(tokenizer) > hf_cfg.vocab_size else None
    if vocab_rows is not None:
        say(f"tokenizer: {len(added)} added token(s) ({', '.join(added)}): the model grows from "
            f"{hf_cfg.vocab_size} to {vocab_rows} rows, new rows the mean of the old")
        hf_cfg.get_text_config().vocab_size = vocab_rows  # what the FLOP count and kernels see
    ds_cfg = zero.build_config(recipe, me.world, hf_cfg.hidden_size, bf16,
                               grad_accum=plan.grad_accum, load_universal=r.universal is not None,
                               hpz=plan.zero["hpz"])
    dtype = torch.bfloat16 if bf16 else torch.float32
    kernels = _kernels(recipe, torch.device("cuda" if on_gpu else "cpu"), dtype, configs.head_dim(hf_cfg),
                       hf_cfg)
    say(f"attention: {kernels.attention.backend} ({kernels.attention.why}); loss head: {kernels.loss}")
    _probe_isolation(hf_cfg, kernels.attention, torch.device("cuda" if on_gpu else "cpu"), dtype, say)
    # the tokens that end a trained answer: the export's (and eval's) stop tokens
    stop_ids = stop_token_ids(tokenizer, recipe.data.template)
    net = model.build(recipe.model, ds_cfg, dtype, kernels.attention.implementation, tokenizer, stop_ids,
                      vocab_rows)
    if me.rank == 0:
        _write_run_files(r.run, ds_cfg, net, tokenizer, stop_ids)
        hierarchy.write_plan(r.run, plan.zero_plan())
    try:
        flop_model = FlopModel.from_model(hf_cfg)
    except ValueError as err:  # a model whose FLOPs medtune cannot count: said, not guessed
        flop_model = None
        say(f"FLOPs: {err}")
    data = PackedData.build(r.dataset, recipe.data.max_tokens,
                                    tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                    else tokenizer.eos_token_id, flop_model)
    optimizer = torch.optim.AdamW(model.param_groups(net, recipe.train.weight_decay),
                                  lr=recipe.train.lr, betas=recipe.train.adam_betas,
                                  eps=recipe.train.adam_eps, fused=on_gpu or None)
    steps = trainer.total_steps(recipe, data, plan.global_batch)
    engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer, config=ds_cfg,
                                      lr_scheduler=_scheduler(recipe, steps))
    if r.start is not None:
        fresh = state
        state = checkpoint.load(engine, r.start, r.universal, me.rank)
        state.world, state.recipe, state.data_fingerprint = me.world, fresh.recipe, fresh.data_fingerprint
        state.packs_per_step = plan.global_batch  # the checkpoint's, kept by the plan
    if recipe.logging.comm_log:
        from medtune.engine.comm_log import record_steps

        record_steps(engine, r.run, me.rank, state.global_step)
    perf = Throughput(me.world, None if flop_model is None else recipe.logging.peak_tflops
                      or (peak_tflops(torch.cuda.get_device_name()) if on_gpu else None))
    validation = None if r.validation is None else PackedData.build(r.validation, recipe.data.max_tokens,
                                                                      data.pad_id)
    return Training(engine, data, state, kernels, perf, validation, tokenizer)


def _train(r: Rank, t: Training, log) -> int:
    """Train to the end (or a stop), save, export and mark the run finished; the exit code."""
    from medtune.engine import checkpoint, export, trainer

    from medtune.engine.evaluate import Evaluator

    recipe, rank, run, state = r.recipe, r.me.rank, r.run, t.state

    def save(s):
        out = checkpoint.save(t.engine, run, s, rank, recipe.train.keep_last)
        r.say(f"checkpoint {out}" + (" (best)" if s.best_step == s.global_step else ""))
        return out

    evaluator = None
    if recipe.train.eval_every:
        evaluator = Evaluator(recipe, run, rank, r.me.world, t.validation, t.kernels, t.tokenizer, r.say)
    if rank == 0:
        checkpoint.repair_best(run, state)
    ended = trainer.run(t.engine, t.data, recipe, rank, r.me.world, state, log, save,
                        lambda: r.stop["signum"] != 0, r.say, t.kernels, t.perf, evaluator)
    if ended == "signal":
        return exitcodes.PREEMPTED
    if ended == "bad_loss":
        return exitcodes.BAD_LOSS
    final = save(state)
    if recipe.train.export:
        ids, logits = trainer.probe_logits(t.engine, t.data, t.kernels.attention)
        export.gather_and_save(t.engine, run, run / "export", rank)
        if rank == 0:
            from safetensors.torch import save_file

            save_file({"input_ids": ids, "logits": logits}, str(run / "probe.safetensors"))
            r.say(f"export written and verified: {run / 'export'}")
    if rank == 0:
        try:
            checkpoint.mark_finished(run, final, state.global_step,
                                     run / "export" if recipe.train.export else None)
        except OSError as err:  # the run is done all the same; a rerun would resume and re-export
            r.say(f"recording that the run finished failed ({err})")
        _closing_lines(r, state)
    return exitcodes.OK


def _closing_lines(r: Rank, state) -> None:
    """The best checkpoint (with ``train.best_metric``) and where to see the curves."""
    t = r.recipe.train
    if t.best_metric and state.best_step is not None:
        r.say(f"best checkpoint: {r.run / 'checkpoints' / 'best'} -> step-{state.best_step:08d} "
              f"({t.best_metric} {state.best_value:.4f}); export it: medtune export {r.run} --best --out DIR")
    if r.recipe.logging.tensorboard:
        r.say(f"learning curves: tensorboard --logdir {r.run / 'tensorboard'}")


def _kernels(recipe: config.Recipe, device, dtype, head_dim: int, hf_cfg=None):
    """The recipe's kernels resolved for this device and model; a backend that cannot run is a user error."""
    from medtune.engine.trainer import Kernels
    from medtune.base.errors import UserError
    from medtune.kernels.attention import model_features, resolve

    k = recipe.kernels
    try:
        attention = resolve(k.attention, device, dtype, head_dim,
                            model_features(hf_cfg) if hf_cfg is not None else None)
    except ValueError as err:
        raise UserError(str(err)) from None
    return Kernels(attention, k.loss, k.loss_chunk_tokens)


def _probe_isolation(hf_cfg, attention, device, dtype, say) -> None:
    """Refuse the run (one line) if `attention` lets a packed row's samples see each other here.

    Runs before `model.build` creates the `HfDeepSpeedConfig` (the probe's tiny
    model must not be built inside ``zero.Init``); see `medtune.kernels.isolation`.
    """
    from medtune.data.collator import collate
    from medtune.engine.trainer import model_inputs
    from medtune.kernels.isolation import check

    def inputs_for(lengths):
        inputs = model_inputs(collate([([3] * n, [3] * n) for n in lengths], pad_id=0), device, attention)
        del inputs["input_ids"]
        return inputs

    result = check(hf_cfg, attention.backend, attention.implementation, inputs_for, device, dtype)
    say(f"attention probe: {attention.backend} keeps packed samples apart "
        f"(relative logit difference {result.max_difference:.1e}, {result.family} family)")


def _stop_on(signals) -> dict:
    """Record a stop request; the trainer finishes the step, saves and exits."""
    flag = {"signum": 0}

    def handler(signum, _frame):
        flag["signum"] = signum
    for s in signals:
        signal.signal(s, handler)
    return flag


def _scheduler(recipe: config.Recipe, steps: int):
    """transformers' warmup + decay schedules, built on the optimizer DeepSpeed wraps."""
    from transformers import get_scheduler

    t = recipe.train
    warmup = t.warmup_steps or int(t.warmup_ratio * steps)
    name = {"constant": "constant_with_warmup"}.get(t.scheduler, t.scheduler)
    return lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=steps)


def _write_run_files(run: Path, ds_cfg: dict, net, tokenizer, stop_ids: list[int]) -> None:
    """What a later export or resume needs: the model config and tokenizer, the configs used."""
    import json

    from medtune.engine.export import HF_DIR, write_hf_dir

    run.mkdir(parents=True, exist_ok=True)
    (run / "deepspeed_config.json").write_text(json.dumps(ds_cfg, indent=2))
    write_hf_dir(run / HF_DIR, net, tokenizer, stop_ids)


def _say(rank: int):
    def say(msg: str) -> None:
        if rank == 0:
            print(f"[medtune] {msg}", file=sys.stderr, flush=True)
    return say


if __name__ == "__main__":
    from medtune.engine.entry import run

    code = run(sys.argv[1:], main)
    # Everything is written, closed and the process group destroyed: leave
    # without running C++ static destructors, where a communication thread
    # still joinable at exit sometimes aborts a finished rank ("terminate
    # called without an active exception", seen under mpirun).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
