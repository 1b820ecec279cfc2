"""Driver of test_task_metrics_zero3: each rank loads MODEL into ZeRO-3 shards and calls task_metrics.

    python -m torch.distributed.run --nproc_per_node 2 tests/integration/during_driver.py \
        MODEL EVAL_RECIPE RUN_DIR STEP [LIMIT]

Every rank writes RUN_DIR/rank-R.json: the metrics it got back, and whether the training RNG,
the train mode and the attention implementation came back unchanged, and whether every
parameter stayed partitioned (no rank held the whole model).
"""
from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import torch


def main(model_dir: str, eval_recipe: str, run_dir: str, step: int, limit: int | None) -> None:
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(1)
    import deepspeed
    import deepspeed.ops
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from medtune.evaluation.during import task_metrics
    from medtune.kernels.attention import REGISTERED, register

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False,
                               timeout=timedelta(minutes=5))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    ds_cfg = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
              "steps_per_print": 10**9}
    # training's attention (a medtune varlen backend, $DRIVER_ATTENTION, default the per-sample
    # sdpa), which generation must not use; the model's own dtype, as `medtune eval` loads it
    register()
    attention = REGISTERED[os.environ.get("DRIVER_ATTENTION", "sdpa_varlen")]
    dtype = AutoConfig.from_pretrained(model_dir).dtype or torch.float32
    if dtype == torch.bfloat16:
        ds_cfg["bf16"] = {"enabled": True}
    handle = HfDeepSpeedConfig(ds_cfg)  # noqa: F841
    net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attention)
    unset_hf_deepspeed_config()
    net.config.use_cache = False
    engine, *_ = deepspeed.initialize(model=net, optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
                                      config=ds_cfg)
    engine.module.train()
    tok = AutoTokenizer.from_pretrained(model_dir)
    recipe = SimpleNamespace(train=SimpleNamespace(eval_tasks=eval_recipe, eval_tasks_limit=limit))
    torch.manual_seed(1234 + rank)
    rng = torch.get_rng_state()
    got = task_metrics(engine, tok, recipe, step, Path(run_dir), rank, world, say=lambda m: print(m, flush=True))
    report = {
        "metrics": got,
        "rng_unchanged": torch.equal(rng, torch.get_rng_state()),
        "training": engine.module.training,
        "attention": engine.module.config._attn_implementation,
        "expected_attention": attention,
        "partitioned": all(p.numel() == 0 and p.ds_numel > 0 for p in engine.module.parameters()),
    }
    Path(run_dir, f"rank-{rank}.json").write_text(json.dumps(report, indent=1))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], int(a[3]), int(a[4]) if len(a) > 4 else None)
