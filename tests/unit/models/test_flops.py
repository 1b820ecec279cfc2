"""The FLOP model against hand counts, peak lookup by device name, MFU."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from medtune.models.families import FAMILIES, PUBLISHED
from medtune.models.flops import FlopModel, mfu, peak_tflops


def test_llama2_7b_against_a_hand_count():
    m = FlopModel.from_config(PUBLISHED["meta-llama/Llama-2-7b-hf"])
    # per layer: q, k, v, o 4096 x 4096 each, MLP 3 x 4096 x 11008; 32 layers; lm_head 4096 x 32000
    weights = 32 * (4 * 16_777_216 + 135_266_304) + 131_072_000
    assert weights == 6_607_077_376  # the 6.74e9 parameters less the input embedding and norms
    assert m.linear_per_token == 6 * weights == 39_642_464_256
    assert m.attention_coef == 6 * 32 * 32 * 128 == 786_432
    assert m.sample(2048) == 39_642_464_256 * 2048 + 786_432 * 2048 ** 2 == 84_486_301_679_616
    assert m.pack([2048]) == m.sample(2048)


def test_grouped_query_attention_counts_fewer_kv_weights():
    m = FlopModel.from_config(PUBLISHED["meta-llama/Llama-3.1-8B"])  # 8 kv heads of 128
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336
    assert m.linear_per_token == 6 * (32 * per_layer + 4096 * 128_256) == 45_027_950_592
    assert m.attention_coef == 786_432


def test_tiny_model_attention_dominates_long_samples():
    m = FlopModel.from_config(FAMILIES["llama"].tiny)  # h 64, i 176, 2 layers, 4 heads, 2 kv
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 176
    assert m.linear_per_token == 6 * (2 * per_layer + 64 * 1000)
    assert m.attention_coef == 6 * 2 * 64
    assert m.attention_coef * 1349 ** 2 > m.linear_per_token * 1349  # why packs balance FLOPs


def test_config_objects_and_missing_defaults():
    # a transformers config is read by attribute; head_dim None and no kv heads mean the defaults
    cfg = SimpleNamespace(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=None, head_dim=None,
                          vocab_size=1000)
    m = FlopModel.from_config(cfg)
    assert m.attention_coef == 6 * 2 * 4 * 16
    assert m.linear_per_token == 6 * (2 * (4 * 64 * 64 + 3 * 64 * 176) + 64 * 1000)
    assert m.pack([3, 5]) == m.sample(3) + m.sample(5)


def test_incomplete_config_is_refused():
    with pytest.raises(ValueError, match="lacks intermediate_size, vocab_size"):
        FlopModel.from_config({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4})


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100-PCIE-40GB", 312.0), ("NVIDIA H200", 989.0),
    ("Tesla V100-SXM2-16GB", None), ("NVIDIA A10G", None), ("cpu", None)])
def test_peak_by_device_name(name, peak):
    assert peak_tflops(name) == peak


def test_mfu():
    assert mfu(989e12 * 8 * 10, 20.0, 8, 989.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seconds > 0"):
        mfu(1e12, 0.0, 8, 989.0)


def test_flops_from_the_module_tree_agree_with_the_formula_and_count_what_it_cannot():
    """Gated-MLP families: the same numbers; an ungated MLP (StarCoder2) counted as built; MoE refused."""
    from transformers import AutoConfig

    for family in FAMILIES:
        cfg = dict(FAMILIES[family].tiny)
        hf = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        assert FlopModel.from_model(hf) == FlopModel.from_config(hf), family
    cfg = dict(PUBLISHED["meta-llama/Llama-2-7b-hf"])
    llama = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    assert FlopModel.from_model(llama).linear_per_token == 6 * 6_607_077_376
    small = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000)
    star = AutoConfig.for_model("starcoder2", **small)  # c_fc and c_proj: 2*h*i, not 3*h*i
    per_layer = 64 * 64 * 2 + 2 * 64 * 32 + 2 * 64 * 176
    assert FlopModel.from_model(star).linear_per_token == 6 * (2 * per_layer + 64 * 1000)
    with pytest.raises(ValueError, match=r"^model_type mixtral is a mixture of experts .*no MFU is reported$"):
        FlopModel.from_model(AutoConfig.for_model("mixtral", **small))
