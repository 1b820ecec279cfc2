"""The DeepSpeed config of a recipe: ZeRO-3 with sizes derived from the model."""
from __future__ import annotations

import json

from medtune.config import Recipe


def build_config(recipe: Recipe, world: int, hidden_size: int, bf16: bool,
                 grad_accum: int | None = None, load_universal: bool = False, hpz: int = 1) -> dict:
    """A complete DeepSpeed config for `recipe` on `world` ranks.

    Bucket, prefetch and persistence sizes follow the usual rules of thumb
    (hidden², 0.9·hidden², 10·hidden) unless the recipe sets them. A user's
    own DeepSpeed JSON replaces the generated ZeRO block; batch sizes,
    accumulation, clipping and precision always come from the recipe so the
    two can never disagree. `grad_accum` overrides the recipe's when a run
    resumes on another number of ranks (the global batch stays the same);
    `load_universal` reads a universal checkpoint written by any world size.
    `hpz` is the resolved ``zero.hierarchy`` (`medtune.comm.resolve`: 1 is
    off); ``zero.quantized_*`` switch on qwZ/qgZ and ``logging.comm_log``
    DeepSpeed's comms logger.
    """
    z = recipe.zero
    h2 = hidden_size * hidden_size
    zero = {
        "stage": 3,
        "overlap_comm": z.overlap_comm,
        "contiguous_gradients": z.contiguous_gradients,
        "reduce_bucket_size": h2 if z.reduce_bucket_size == "auto" else z.reduce_bucket_size,
        "stage3_prefetch_bucket_size": (int(0.9 * h2) if z.prefetch_bucket_size == "auto"
                                        else z.prefetch_bucket_size),
        "stage3_param_persistence_threshold": (10 * hidden_size if z.param_persistence_threshold == "auto"
                                               else z.param_persistence_threshold),
        "stage3_max_live_parameters": z.max_live_parameters,
        "stage3_max_reuse_distance": (z.max_live_parameters if z.max_reuse_distance == "auto"
                                      else z.max_reuse_distance),
        "stage3_gather_16bit_weights_on_model_save": False,
    }
    if hpz > 1:
        zero["zero_hpz_partition_size"] = hpz
    if z.quantized_weights:
        zero["zero_quantized_weights"] = True
    if z.quantized_gradients:
        zero["zero_quantized_gradients"] = True
    if z.offload_optimizer == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if z.offload_params == "cpu":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg: dict = {}
    if z.deepspeed_config:
        with open(z.deepspeed_config) as fh:
            cfg = json.load(fh)
        zero = {**zero, **cfg.get("zero_optimization", {})}
        if zero.get("stage") != 3:
            raise ValueError(f"{z.deepspeed_config}: zero_optimization.stage = {zero.get('stage')}: "
                             "medtune trains with ZeRO stage 3")
    t = recipe.train
    accum = grad_accum or t.grad_accum
    cfg.update({
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": accum,
        "train_batch_size": world * accum,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 60,
        "wall_clock_breakdown": False,
    })
    if recipe.logging.comm_log:
        cfg["comms_logger"] = {"enabled": True, "prof_all": True, "verbose": False, "debug": False}
    if load_universal:
        cfg["checkpoint"] = {**cfg.get("checkpoint", {}), "load_universal": True}
    return cfg
