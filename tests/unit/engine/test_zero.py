"""The generated DeepSpeed config: ZeRO-3 sizes from the hidden size, recipe-owned batch fields."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtune import config
from medtune.engine.zero import build_config, user_config_problems
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


@pytest.mark.parametrize("overrides", [["zero.offload_optimizer=cpu"], []])
def test_offloaded_optimizer_takes_medtunes_adamw(overrides):
    """DeepSpeed refuses a client optimizer (medtune's torch AdamW) with the optimizer offloaded
    unless ``zero_force_ds_cpu_optimizer`` is false: every rank died at deepspeed.initialize with
    ZeRORuntimeException "You are using ZeRO-Offload with a client provided optimizer"."""
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = build_config(_recipe(*overrides), world=1, hidden_size=64, bf16=False)
    ds = DeepSpeedConfig(cfg)
    offloaded = bool(overrides)
    assert (ds.zero_config.offload_optimizer is not None) == offloaded
    assert ds.zero_force_ds_cpu_optimizer is (not offloaded)


def test_users_deepspeed_json_keeps_recipe_batch_fields(tmp_path):
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 3, "reduce_bucket_size": 7},
                                "train_batch_size": "auto", "gradient_accumulation_steps": "auto"}))
    cfg = build_config(_recipe(f"zero.deepspeed_config={user}", "train.grad_accum=2"), world=2,
                       hidden_size=64, bf16=False)
    assert cfg["zero_optimization"]["reduce_bucket_size"] == 7
    assert cfg["train_batch_size"] == 4 and cfg["gradient_accumulation_steps"] == 2


def test_users_deepspeed_json_must_be_stage_3(tmp_path):
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    with pytest.raises(config.RecipeError, match="zero_optimization.stage = 2: medtune trains with ZeRO stage 3"):
        build_config(_recipe(f"zero.deepspeed_config={user}"), world=2, hidden_size=64, bf16=False)


# ---- issue 14, fault 9: a DeepSpeed JSON the user already has -----------------------------------

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "deepspeed"


def test_auto_values_resolve_as_transformers_resolves_them():
    """Was: "auto" reached DeepSpeed, which took its defaults (5e8, 5e7, 1e5): hidden 64 kept every
    weight of the tiny model (< 1e5 elements) unpartitioned."""
    r = _recipe(f"zero.deepspeed_config={ASSETS / 'llamafactory_z3.json'}", "train.grad_accum=3",
                "train.max_grad_norm=0.5")
    assert user_config_problems(r, world=4) == []
    cfg = build_config(r, world=4, hidden_size=64, bf16=True)
    z = cfg["zero_optimization"]
    assert z["reduce_bucket_size"] == 64 * 64 == 4096
    assert z["stage3_prefetch_bucket_size"] == int(0.9 * 64 * 64) == 3686
    assert z["stage3_param_persistence_threshold"] == 10 * 64 == 640
    assert z["overlap_comm"] is False and z["sub_group_size"] == 1e9  # the file's own values stay
    assert cfg["train_micro_batch_size_per_gpu"] == 1 and cfg["gradient_accumulation_steps"] == 3
    assert cfg["train_batch_size"] == 12 and cfg["gradient_clipping"] == 0.5
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"]["enabled"] is False
    assert "auto" not in json.dumps(cfg)


def test_resolved_sizes_are_the_ones_deepspeed_reads():
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    r = _recipe(f"zero.deepspeed_config={ASSETS / 'llamafactory_z3.json'}")
    parsed = DeepSpeedZeroConfig(**build_config(r, world=2, hidden_size=64, bf16=False)["zero_optimization"])
    assert (parsed.reduce_bucket_size, parsed.prefetch_bucket_size, parsed.param_persistence_threshold) == \
        (4096, 3686, 640)


def test_recipe_values_fill_auto_before_the_rules_of_thumb():
    r = _recipe(f"zero.deepspeed_config={ASSETS / 'llamafactory_z3.json'}", "zero.reduce_bucket_size=1000")
    assert build_config(r, world=2, hidden_size=64, bf16=False)["zero_optimization"]["reduce_bucket_size"] == 1000


def test_hf_docs_file_its_optimizer_honoured_its_scheduler_refused(tmp_path):
    r = _recipe(f"zero.deepspeed_config={ASSETS / 'hf_docs_zero3.json'}")
    assert user_config_problems(r, world=2) == [
        ("scheduler", "medtune schedules the learning rate itself (transformers' schedules): set "
                      "train.scheduler, train.warmup_steps or train.warmup_ratio and remove this block")]
    without = json.loads((ASSETS / "hf_docs_zero3.json").read_text())
    del without["scheduler"]
    user = tmp_path / "ds.json"
    user.write_text(json.dumps(without))
    cfg = build_config(_recipe(f"zero.deepspeed_config={user}"), world=2, hidden_size=64, bf16=False)
    assert "optimizer" not in cfg and "scheduler" not in cfg  # the ranks hand DeepSpeed medtune's AdamW
    assert cfg["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert cfg["zero_force_ds_cpu_optimizer"] is False  # the file offloads: medtune's AdamW must be let in
    assert cfg["steps_per_print"] == 1 << 60 and "auto" not in json.dumps(cfg)


# (case, the user's JSON, overrides, the key and message of the one problem)
USER_JSON_BAD = [
    ("stage 2", {"zero_optimization": {"stage": 2, "reduce_bucket_size": 5e8}}, [],
     "zero_optimization.stage", "= 2: medtune trains with ZeRO stage 3; write 3 (or leave it out)"),
    ("optimizer not AdamW", {"optimizer": {"type": "Lamb", "params": {"lr": "auto"}}}, [],
     "optimizer.type", '= "Lamb": medtune trains with AdamW'),
    ("optimizer lr disagrees", {"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}, ["train.lr=2e-5"],
     "optimizer.params.lr", "= 0.001 but the recipe's train.lr is 2e-05: write \"auto\" or change train.lr"),
    ("optimizer extra param", {"optimizer": {"type": "AdamW", "params": {"torch_adam": True}}}, [],
     "optimizer.params.torch_adam", "medtune's AdamW has no such setting"),
    ("grad accum disagrees", {"gradient_accumulation_steps": 8}, ["train.grad_accum=2"],
     "gradient_accumulation_steps", "= 8 but the recipe's train.grad_accum gives 2"),
    ("global batch disagrees", {"train_batch_size": 64}, ["train.grad_accum=2"],
     "train_batch_size", "= 64 but the recipe's train.grad_accum x 2 ranks gives 4"),
    ("micro batch of 4", {"train_micro_batch_size_per_gpu": 4}, [],
     "train_micro_batch_size_per_gpu", "= 4 but the recipe's packing"),
    ("clipping disagrees", {"gradient_clipping": 0.3}, ["train.max_grad_norm=1.0"],
     "gradient_clipping", "= 0.3 but the recipe's train.max_grad_norm gives 1.0"),
    ("fp16 on", {"fp16": {"enabled": True}}, [], "fp16.enabled", "medtune trains in bf16 or fp32"),
    ("bf16 on, fp32 recipe", {"bf16": {"enabled": True}}, ["model.dtype=fp32"],
     "bf16.enabled", "= true but the recipe's model.dtype is fp32"),
    ("bf16 fixed, dtype auto", {"bf16": {"enabled": False}}, ["model.dtype=auto"],
     "bf16.enabled", "but model.dtype is auto"),
    ("activation checkpointing", {"activation_checkpointing": {"partition_activations": True}}, [],
     "activation_checkpointing", "model.gradient_checkpointing"),
    ("LLaMA-Factory monitor", {"monitor_config": {"enabled": True}}, [], "monitor_config",
     "not a DeepSpeed setting"),
    ("unknown block", {"pipeline": {"stages": 2}}, [], "pipeline", "medtune does not use this DeepSpeed block"),
    ("auto medtune cannot fill", {"zero_optimization": {"stage": 3, "sub_group_size": "auto"}}, [],
     "zero_optimization.sub_group_size", '= "auto": medtune has no value for it'),
    ("comms logger on", {"comms_logger": {"enabled": True}}, [], "comms_logger.enabled",
     "logging.comm_log"),
]


@pytest.mark.parametrize("case,user,overrides,key,message", USER_JSON_BAD, ids=[c[0] for c in USER_JSON_BAD])
def test_what_medtune_cannot_honour_is_refused_naming_the_key(tmp_path, case, user, overrides, key, message):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(user))
    found = user_config_problems(_recipe(f"zero.deepspeed_config={path}", *overrides), world=2)
    assert len(found) == 1 and found[0][0] == key and message in found[0][1], found


def test_not_json_and_repeated_keys_are_one_line(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 3,}}')
    with pytest.raises(config.RecipeError) as err:
        user_config_problems(_recipe(f"zero.deepspeed_config={path}"), world=2)
    assert err.value.problems == [f"{path}:1:35: not valid JSON: Expecting property name enclosed in double quotes"]
    path.write_text('{"gradient_clipping": 1.0, "gradient_clipping": "auto"}')
    with pytest.raises(config.RecipeError, match="key 'gradient_clipping' is given twice"):
        user_config_problems(_recipe(f"zero.deepspeed_config={path}"), world=2)


def test_stage_2_file_is_refused_before_any_rank_starts(tmp_path, capsys):
    """Was: refused inside every rank, 45 s in, with two tracebacks."""
    from medtune import cli

    user = tmp_path / "ds_z2.json"
    user.write_text(json.dumps({"train_batch_size": "auto", "zero_optimization": {"stage": 2}}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: [{RECIPES / 'demo.yaml'}]\nzero:\n  deepspeed_config: ds_z2.json\n")
    for verb in (["train", str(recipe)], ["launch", str(recipe), "--hostfile", str(tmp_path / "h"), "--dry-run"],
                 ["slurm", str(recipe), "--nodes", "1", "--gpus-per-node", "0"]):
        (tmp_path / "h").write_text("localhost slots=2\n")
        code = cli.main([*verb, "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == [f"medtune: error: {recipe}: zero.deepspeed_config: {user}: "
                                     "zero_optimization.stage = 2: medtune trains with ZeRO stage 3; "
                                     "write 3 (or leave it out)"], (verb, err)
        assert not (tmp_path / "run").exists()
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
