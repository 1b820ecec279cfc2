"""The entry every rank runs: ``python -m medtune.engine.main --recipe R --run-dir D``."""
from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from medtune import config
from medtune.launcher.env import discover


def main(recipe_path: str, run_dir: str) -> int:
    """Build, train, export and always clean up, on one rank."""
    recipe = config.load(recipe_path)
    run = Path(run_dir)
    me = discover()
    os.environ.update(me.export())
    threads = recipe.launch.threads_per_proc or max(1, (os.cpu_count() or 1) // me.local_world)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    torch.set_num_threads(threads)
    say = _say(me.rank)

    from medtune.data.prepare import prepare

    prepared = prepare(recipe, recipe_path, log=say)  # before any collective: no timeout to outlive

    import deepspeed
    import deepspeed.comm as dist
    from transformers import set_seed

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(me.local_rank)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False,
                               timeout=timedelta(minutes=recipe.launch.timeout_minutes))
    log = None
    try:
        from medtune.data.tokenizer import load as load_tokenizer
        from medtune.engine import checkpoint, export, model, trainer, zero
        from medtune.engine.metrics import MetricsLog

        set_seed(recipe.train.seed)
        tokenizer = load_tokenizer(recipe)
        bf16 = recipe.model.dtype == "bf16" or (recipe.model.dtype == "auto" and on_gpu
                                                and torch.cuda.is_bf16_supported())
        hf_cfg = model.hf_config(recipe.model)
        ds_cfg = zero.build_config(recipe, me.world, hf_cfg.hidden_size, bf16)
        net = model.build(recipe.model, ds_cfg, torch.bfloat16 if bf16 else torch.float32)
        if me.rank == 0:
            _write_run_files(run, recipe, ds_cfg, net, tokenizer)
        data = trainer.PackedData.build(prepared.dataset, recipe.data.max_tokens,
                                        tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                        else tokenizer.eos_token_id)
        optimizer = torch.optim.AdamW(model.param_groups(net, recipe.train.weight_decay),
                                      lr=recipe.train.lr, betas=recipe.train.adam_betas,
                                      eps=recipe.train.adam_eps, fused=on_gpu or None)
        steps = trainer.total_steps(recipe, data, me.world)
        engine, *_ = deepspeed.initialize(model=net, optimizer=optimizer, config=ds_cfg,
                                          lr_scheduler=_scheduler(recipe, steps))
        log = MetricsLog(run, me.rank, recipe.logging.tensorboard)
        state = checkpoint.TrainerState(world=me.world)

        def save(s):
            return checkpoint.save(engine, run, s, me.rank)

        state = trainer.run(engine, data, recipe, me.rank, me.world, state, log, save, say)
        save(state)
        if recipe.train.export:
            ids, logits = trainer.probe_logits(engine, data)
            export.gather_and_save(engine, run, run / "export", me.rank)
            if me.rank == 0:
                from safetensors.torch import save_file

                save_file({"input_ids": ids, "logits": logits}, str(run / "probe.safetensors"))
                say(f"export written and verified: {run / 'export'}")
        return 0
    finally:
        if log is not None:
            log.close()
        dist.barrier()
        dist.destroy_process_group()


def _scheduler(recipe: config.Recipe, steps: int):
    """transformers' warmup + decay schedules, built on the optimizer DeepSpeed wraps."""
    from transformers import get_scheduler

    t = recipe.train
    warmup = t.warmup_steps or int(t.warmup_ratio * steps)
    name = {"constant": "constant_with_warmup"}.get(t.scheduler, t.scheduler)
    return lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=steps)


def _write_run_files(run: Path, recipe, ds_cfg: dict, net, tokenizer) -> None:
    """What a later export or resume needs: the model config and tokenizer, the configs used."""
    import copy
    import json

    from medtune.engine.export import HF_DIR

    run.mkdir(parents=True, exist_ok=True)
    (run / "deepspeed_config.json").write_text(json.dumps(ds_cfg, indent=2))
    hf = run / HF_DIR
    hf.mkdir(exist_ok=True)
    cfg = copy.deepcopy(net.config)
    cfg.use_cache = True  # training turns the KV cache off; generation wants it back
    cfg.save_pretrained(hf)
    if net.generation_config is not None:
        net.generation_config.save_pretrained(hf)
    tokenizer.save_pretrained(hf)


def _say(rank: int):
    def say(msg: str) -> None:
        if rank == 0:
            print(f"[medtune] {msg}", file=sys.stderr, flush=True)
    return say


if __name__ == "__main__":
    from medtune.cli import rank_entry

    sys.exit(rank_entry(sys.argv[1:]))
