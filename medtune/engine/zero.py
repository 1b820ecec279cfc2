"""The DeepSpeed config of a recipe: ZeRO-3 with sizes derived from the model.

A user's own DeepSpeed JSON (``zero.deepspeed_config``) is read here too, by
rules checked before any rank starts (`user_config_problems`, called by
``medtune train|launch|slurm``) and applied on every rank (`build_config`):

- ``"auto"`` is resolved the way transformers' DeepSpeed integration resolves
  it (``HfTrainerDeepSpeedConfig.trainer_config_process``/``_finalize``):
  ``reduce_bucket_size`` hidden², ``stage3_prefetch_bucket_size``
  int(0.9·hidden²), ``stage3_param_persistence_threshold`` 10·hidden (each the
  recipe's ``zero.*`` value, which defaults to that), the other ZeRO keys
  medtune sets from the recipe's ``zero.*``; ``train_micro_batch_size_per_gpu``
  1 (one packed row), ``gradient_accumulation_steps`` ``train.grad_accum``,
  ``train_batch_size`` ranks × that, ``gradient_clipping`` ``train.max_grad_norm``,
  ``bf16.enabled``/``fp16.enabled`` from ``model.dtype``.
- A number where medtune has its own value must agree with the recipe (as
  transformers' ``fill_match`` requires), ``zero_optimization.stage`` must be 3.
- ``optimizer`` is honoured when it is what medtune builds anyway (AdamW whose
  params are ``"auto"`` or the recipe's ``train.lr``/``adam_betas``/``adam_eps``/
  ``weight_decay``); it is then left out of the config, since the ranks hand
  DeepSpeed medtune's own AdamW. Any other optimizer, a ``scheduler`` (medtune
  schedules with transformers' schedules from ``train.scheduler``) and blocks
  medtune does not use are refused, one line each naming the key.

So what ``RUN_DIR/deepspeed_config.json`` holds is what the ranks gave DeepSpeed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medtune.config import Recipe, RecipeError

AUTO = "auto"

# Top-level keys medtune sets from the recipe; the file may say "auto" or agree.
_RECIPE_OWNED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                 "gradient_clipping", "bf16", "fp16", "optimizer")
# Top-level keys medtune writes itself; the file's values are replaced (they only steer logging).
_MEDTUNE_SET = ("zero_allow_untested_optimizer", "steps_per_print", "wall_clock_breakdown")
# DeepSpeed settings passed through as written: they change how DeepSpeed communicates, checkpoints
# or reports, never what medtune computes.
PASSED_THROUGH = ("zero_optimization", "checkpoint", "communication_data_type", "prescale_gradients",
                  "gradient_predivide_factor", "data_types", "aio", "zero_force_ds_cpu_optimizer",
                  "memory_breakdown", "tensorboard", "wandb", "csv_monitor", "comet", "flops_profiler",
                  "dump_state", "disable_allgather", "comms_logger")
# Why a block is refused, where there is more to say than "medtune does not use it".
_REFUSED = {
    "scheduler": "medtune schedules the learning rate itself (transformers' schedules): set "
                 "train.scheduler, train.warmup_steps or train.warmup_ratio and remove this block",
    "activation_checkpointing": "medtune recomputes activations with model.gradient_checkpointing "
                                "(DeepSpeed's block would be ignored); remove it",
    "amp": "medtune trains in model.dtype (bf16 or fp32); remove it",
    "torch_autocast": "medtune trains in model.dtype (bf16 or fp32); remove it",
    "monitor_config": "not a DeepSpeed setting (DeepSpeed ignores it); logs go to RUN_DIR/metrics.jsonl "
                      "and TensorBoard (logging.tensorboard); remove it",
    "comms_config": "not a DeepSpeed setting (DeepSpeed ignores it); medtune's comms log is "
                    "logging.comm_log; remove it",
}


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"key {k!r} is given twice (JSON readers keep only the last)")
        seen[k] = v
    return seen


def read_user_config(path: str | Path) -> dict:
    """The JSON object of `path`; `RecipeError` (one line naming the file) if it is not one."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8-sig"), object_pairs_hook=_no_repeats)
    except OSError as err:
        raise RecipeError([f"{path}: cannot read ({err.strerror})"]) from None
    except json.JSONDecodeError as err:
        raise RecipeError([f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}"]) from None
    except ValueError as err:
        raise RecipeError([f"{path}: {err}"]) from None
    if not isinstance(cfg, dict):
        raise RecipeError([f"{path}: a DeepSpeed config is a JSON object, got {type(cfg).__name__}"])
    return cfg


def _zero_block(recipe: Recipe, hidden_size: int | None, hpz: int) -> dict:
    """medtune's ZeRO-3 block; with `hidden_size` None the hidden-size rules are left as "auto"."""
    z = recipe.zero

    def sized(value, rule):
        return value if value != AUTO else (AUTO if hidden_size is None else rule(hidden_size))

    zero = {
        "stage": 3,
        "overlap_comm": z.overlap_comm,
        "contiguous_gradients": z.contiguous_gradients,
        "reduce_bucket_size": sized(z.reduce_bucket_size, lambda h: h * h),
        "stage3_prefetch_bucket_size": sized(z.prefetch_bucket_size, lambda h: int(0.9 * h * h)),
        "stage3_param_persistence_threshold": sized(z.param_persistence_threshold, lambda h: 10 * h),
        "stage3_max_live_parameters": z.max_live_parameters,
        "stage3_max_reuse_distance": (z.max_live_parameters if z.max_reuse_distance == AUTO
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
    return zero


def _autos(tree: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is "auto" anywhere in `tree`."""
    if isinstance(tree, dict):
        return [k for key, v in tree.items() for k in _autos(v, f"{prefix}{key}.")]
    return [prefix[:-1]] if tree == AUTO else []


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def user_config_problems(recipe: Recipe, world: int | None = None) -> list[tuple[str, str]]:
    """(key of the user's JSON, message) for each part of ``zero.deepspeed_config`` medtune cannot honour.

    `world` (ranks) checks ``train_batch_size``, ``gradient_accumulation_steps``
    and ``train_micro_batch_size_per_gpu`` against the recipe too; the ranks
    pass None (a resume on another world size changes the accumulation).
    Raises `RecipeError` if the file is not a JSON object.
    """
    if not recipe.zero.deepspeed_config:
        return []
    user = read_user_config(recipe.zero.deepspeed_config)
    t, dtype = recipe.train, recipe.model.dtype
    out: list[tuple[str, str]] = []
    for key, value in user.items():
        if key in _RECIPE_OWNED or key in _MEDTUNE_SET or key in PASSED_THROUGH:
            continue
        out.append((key, _REFUSED.get(key, "medtune does not use this DeepSpeed block (it would be "
                                           "ignored or fight medtune's own settings); remove it")))
    zero = user.get("zero_optimization", {})
    if not isinstance(zero, dict):
        out.append(("zero_optimization", "must be an object"))
        zero = {}
    elif zero.get("stage", 3) != 3:
        out.append(("zero_optimization.stage", f"= {zero.get('stage')!r}: medtune trains with ZeRO stage 3; "
                                               "write 3 (or leave it out)"))
    ours = _zero_block(recipe, None, 1)
    for key, value in zero.items():
        if value == AUTO and key not in ours:
            out.append((f"zero_optimization.{key}", '= "auto": medtune has no value for it; write one'))
    for key in _autos({k: v for k, v in zero.items() if not isinstance(v, (str, int, float, bool))},
                      "zero_optimization."):
        out.append((key, '= "auto": medtune has no value for it; write one'))

    def agree(key: str, value, mine, recipe_key: str) -> None:
        if value != AUTO and not _same(value, mine):
            out.append((key, f"= {json.dumps(value)} but the recipe's {recipe_key} gives {json.dumps(mine)}: "
                             f'write "auto" (medtune fills it in) or change {recipe_key}'))

    if "gradient_clipping" in user:
        agree("gradient_clipping", user["gradient_clipping"], t.max_grad_norm, "train.max_grad_norm")
    if world is not None:
        if "train_micro_batch_size_per_gpu" in user:
            agree("train_micro_batch_size_per_gpu", user["train_micro_batch_size_per_gpu"], 1,
                  "packing (one packed row per micro-batch; data.max_tokens sets its size)")
        if "gradient_accumulation_steps" in user:
            agree("gradient_accumulation_steps", user["gradient_accumulation_steps"], t.grad_accum,
                  "train.grad_accum")
        if "train_batch_size" in user:
            agree("train_batch_size", user["train_batch_size"], world * t.grad_accum,
                  f"train.grad_accum x {world} ranks")
    for block in ("bf16", "fp16"):
        b = user.get(block, {})
        if not isinstance(b, dict):
            out.append((block, "must be an object such as {\"enabled\": \"auto\"}"))
            continue
        enabled = b.get("enabled", AUTO if block == "bf16" else False)
        if block == "fp16" and enabled not in (AUTO, False):
            out.append(("fp16.enabled", f"= {json.dumps(enabled)}: medtune trains in bf16 or fp32 "
                                        "(model.dtype); write false or \"auto\""))
        elif block == "bf16" and enabled != AUTO:
            if dtype == "auto":
                out.append(("bf16.enabled", f"= {json.dumps(enabled)} but model.dtype is auto (bf16 where "
                                            "the GPU has it, else fp32): write \"auto\" or set model.dtype"))
            elif bool(enabled) != (dtype == "bf16"):
                out.append(("bf16.enabled", f"= {json.dumps(enabled)} but the recipe's model.dtype is {dtype}: "
                                            "write \"auto\" or change model.dtype"))
    opt = user.get("optimizer")
    if opt is not None:
        out += _optimizer_problems(opt, recipe)
    if "comms_logger" in user and bool((user["comms_logger"] or {}).get("enabled")) != recipe.logging.comm_log:
        out.append(("comms_logger.enabled", f"disagrees with the recipe's logging.comm_log "
                                            f"({recipe.logging.comm_log}): leave the block out and set "
                                            "logging.comm_log (--comm-log)"))
    return out


def _optimizer_problems(opt, recipe: Recipe) -> list[tuple[str, str]]:
    """An optimizer block is honoured only as the AdamW medtune builds from the recipe."""
    t = recipe.train
    if not isinstance(opt, dict) or str(opt.get("type", "")).lower() != "adamw":
        kind = opt.get("type") if isinstance(opt, dict) else opt
        return [("optimizer.type", f"= {json.dumps(kind)}: medtune trains with AdamW (train.lr, "
                                   "train.adam_betas, train.adam_eps, train.weight_decay); remove this block")]
    mine = {"lr": t.lr, "betas": list(t.adam_betas), "eps": t.adam_eps, "weight_decay": t.weight_decay}
    names = {"lr": "train.lr", "betas": "train.adam_betas", "eps": "train.adam_eps",
             "weight_decay": "train.weight_decay"}
    out = []
    for key in opt:
        if key not in ("type", "params"):
            out.append((f"optimizer.{key}", "medtune does not use it; remove it"))
    for key, value in (opt.get("params") or {}).items():
        if key not in mine:
            out.append((f"optimizer.params.{key}", "medtune's AdamW has no such setting; remove it"))
        elif value != AUTO and not _same(value, mine[key]):
            out.append((f"optimizer.params.{key}", f"= {json.dumps(value)} but the recipe's {names[key]} is "
                                                   f"{json.dumps(mine[key])}: write \"auto\" or change "
                                                   f"{names[key]}"))
    return out


def describe(key: str, msg: str) -> str:
    """``key = value: why`` or ``key: why``, the recipe errors' form."""
    return f"{key} {msg}" if msg.startswith("= ") else f"{key}: {msg}"


def build_config(recipe: Recipe, world: int, hidden_size: int, bf16: bool,
                 grad_accum: int | None = None, load_universal: bool = False, hpz: int = 1) -> dict:
    """A complete DeepSpeed config for `recipe` on `world` ranks: exactly what the ranks hand DeepSpeed.

    Bucket, prefetch and persistence sizes follow the usual rules of thumb
    (hidden², 0.9·hidden², 10·hidden) unless the recipe sets them. A user's
    own DeepSpeed JSON replaces the generated ZeRO block key by key, its
    ``"auto"`` values resolved as the module docstring says; batch sizes,
    accumulation, clipping and precision always come from the recipe so the
    two can never disagree (`user_config_problems` refused a disagreeing file
    before the ranks started; here `RecipeError` if it is still wrong).
    `grad_accum` overrides the recipe's when a run resumes on another number
    of ranks (the global batch stays the same); `load_universal` reads a
    universal checkpoint written by any world size. `hpz` is the resolved
    ``zero.hierarchy`` (`medtune.hierarchy.resolve`: 1 is off); ``zero.quantized_*``
    switch on qwZ/qgZ and ``logging.comm_log`` DeepSpeed's comms logger.
    """
    zero = _zero_block(recipe, hidden_size, hpz)
    cfg: dict = {}
    path = recipe.zero.deepspeed_config
    if path:
        found = user_config_problems(recipe)
        if found:
            raise RecipeError([f"{path}: {describe(key, msg)}" for key, msg in found])
        cfg = read_user_config(path)
        cfg.pop("optimizer", None)  # honoured: the ranks pass medtune's AdamW, built from the same values
        user_zero = cfg.get("zero_optimization", {})
        zero.update({k: (zero[k] if v == AUTO else v) for k, v in user_zero.items()})
        zero["stage"] = 3
    t = recipe.train
    accum = grad_accum or t.grad_accum
    cfg.update({
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": accum,
        "train_batch_size": world * accum,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {**cfg.get("bf16", {}), "enabled": bf16},
        "fp16": {**cfg.get("fp16", {}), "enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 60,
        "wall_clock_breakdown": False,
    })
    offload = zero.get("offload_optimizer")
    if isinstance(offload, dict) and offload.get("device", "none") != "none":
        # The ranks hand DeepSpeed medtune's own torch AdamW; with the optimizer offloaded,
        # DeepSpeed refuses any client optimizer but its DeepSpeedCPUAdam unless told otherwise
        # (deepspeed/runtime/engine.py, _configure_optimizer: ZeRORuntimeException "You are
        # using ZeRO-Offload with a client provided optimizer"). The AdamW then steps the fp32
        # master weights on the host.
        cfg.setdefault("zero_force_ds_cpu_optimizer", False)
    cfg.pop("comms_logger", None)
    if recipe.logging.comm_log:
        cfg["comms_logger"] = {"enabled": True, "prof_all": True, "verbose": False, "debug": False}
    if load_universal:
        cfg["checkpoint"] = {**cfg.get("checkpoint", {}), "load_universal": True}
    leftover = _autos(cfg)
    if leftover:  # unreachable after user_config_problems; never hand DeepSpeed an "auto"
        raise RecipeError([f"{path}: {key}: \"auto\" left unresolved" for key in leftover])
    return cfg
