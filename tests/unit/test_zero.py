"""The generated DeepSpeed config: ZeRO-3 sizes from the hidden size, recipe-owned batch fields."""
from __future__ import annotations

import json

import pytest

from medtune import config
from medtune.engine.zero import build_config
from tests.conftest import RECIPES


def _recipe(*overrides):
    return config.load(RECIPES / "demo.yaml", list(overrides))


def test_sizes_derive_from_hidden_size():
    cfg = build_config(_recipe("train.grad_accum=4", "train.max_grad_norm=0.5"), world=8,
                       hidden_size=4096, bf16=True)
    z = cfg["zero_optimization"]
    assert z["stage"] == 3 and z["overlap_comm"] and z["contiguous_gradients"]
    assert z["reduce_bucket_size"] == 4096 ** 2
    assert z["stage3_prefetch_bucket_size"] == int(0.9 * 4096 ** 2)
    assert z["stage3_param_persistence_threshold"] == 40960
    assert cfg["train_batch_size"] == 32 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["gradient_clipping"] == 0.5 and cfg["bf16"] == {"enabled": True}


def test_recipe_values_and_offload_win():
    cfg = build_config(_recipe("zero.reduce_bucket_size=1000", "zero.offload_optimizer=cpu"),
                       world=2, hidden_size=64, bf16=False)
    z = cfg["zero_optimization"]
    assert z["reduce_bucket_size"] == 1000 and z["offload_optimizer"]["device"] == "cpu"
    assert "offload_param" not in z


def test_users_deepspeed_json_keeps_recipe_batch_fields(tmp_path):
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 3, "reduce_bucket_size": 7},
                                "train_batch_size": 999, "gradient_accumulation_steps": 99}))
    cfg = build_config(_recipe(f"zero.deepspeed_config={user}", "train.grad_accum=2"), world=2,
                       hidden_size=64, bf16=False)
    assert cfg["zero_optimization"]["reduce_bucket_size"] == 7
    assert cfg["train_batch_size"] == 4 and cfg["gradient_accumulation_steps"] == 2


def test_users_deepspeed_json_must_be_stage_3(tmp_path):
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    with pytest.raises(ValueError, match="zero_optimization.stage = 2"):
        build_config(_recipe(f"zero.deepspeed_config={user}"), world=2, hidden_size=64, bf16=False)


def test_hierarchy_quantization_and_comm_log_reach_deepspeed():
    plain = build_config(_recipe(), world=4, hidden_size=64, bf16=False)
    z = plain["zero_optimization"]
    assert "zero_hpz_partition_size" not in z and "zero_quantized_weights" not in z
    assert "zero_quantized_gradients" not in z and "comms_logger" not in plain
    assert z["stage3_max_reuse_distance"] == z["stage3_max_live_parameters"] == 1_000_000_000
    cfg = build_config(_recipe("zero.quantized_weights=true", "zero.quantized_gradients=true",
                               "logging.comm_log=true", "zero.max_reuse_distance=5"),
                       world=4, hidden_size=64, bf16=False, hpz=2)
    z = cfg["zero_optimization"]
    assert z["zero_hpz_partition_size"] == 2 and z["stage3_max_reuse_distance"] == 5
    assert z["zero_quantized_weights"] is True and z["zero_quantized_gradients"] is True
    assert cfg["comms_logger"] == {"enabled": True, "prof_all": True, "verbose": False, "debug": False}
    assert "zero_hpz_partition_size" not in build_config(_recipe(), 4, 64, False, hpz=1)["zero_optimization"]


def test_qwz_and_qgz_configs_are_accepted_by_deepspeed():
    """What a GPU run gets: DeepSpeed parses the flags (they only fail later, in CUDA kernels)."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    cfg = build_config(_recipe("zero.quantized_weights=true", "zero.quantized_gradients=true"),
                       world=16, hidden_size=4096, bf16=True, hpz=8)
    parsed = DeepSpeedZeroConfig(**cfg["zero_optimization"])
    assert parsed.zero_hpz_partition_size == 8
    assert parsed.zero_quantized_weights and parsed.zero_quantized_gradients
