"""The communication plan: DeepSpeed's ZeRO-3 collectives replayed, hierarchy resolved, plan printed."""
from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from medtune import cli, config
from medtune.engine import hierarchy
from medtune.planning import comm
from medtune.engine import comm_log
from medtune.engine.zero import build_config
from tests.conftest import RECIPES

TINY = dict(model_type="llama", hidden_size=64, intermediate_size=176, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, vocab_size=1000,
            tie_word_embeddings=False)


def _cfg(d: dict):
    from transformers import AutoConfig

    d = dict(d)
    return AutoConfig.for_model(d.pop("model_type"), **d)


@pytest.fixture(scope="module")
def tiny_trace() -> comm.ModelTrace:
    return comm.model_trace(_cfg(TINY))


@pytest.fixture(scope="module")
def llama7b():
    from medtune.models import configs

    recipe = config.load(RECIPES / "llama2-7b-medtuned.yaml", check_files=False)
    cfg = configs.load_config(recipe.model)
    return recipe, cfg, comm.model_trace(cfg)


# Measured with DeepSpeed 0.19.8's comms logger on 4 CPU ranks (gloo), the tiny Llama above in fp32,
# 2 micro-batches per step, prefetch 0.9*64^2, persistence 640, live 1e9: all-gather bytes each rank
# handed over per optimizer step (steps 1, 2, 3; the first records the module trace). Every step
# reduce-scattered 1,763,840 bytes (2 x all 220,480 gradients x 4 bytes).
MEASURED = {
    (10 ** 9, 1): [661760, 440640, 440640],
    (10 ** 9, 2): [1323200, 660800, 660800],
    (0, 1): [749312, 615744, 615744],
    (0, 2): [1498304, 1011008, 1011008],
}


# The same with non-reentrant activation checkpointing (transformers' gradient_checkpointing_enable).
MEASURED_CHECKPOINTING = {
    (10 ** 9, 1): [731648, 440640, 440640],
    (0, 1): [830464, 638272, 638272],
    (0, 2): [1660608, 1056064, 1056064],
}


def _knobs(reuse: int) -> comm.Knobs:
    return comm.Knobs(prefetch_bucket=int(0.9 * 64 * 64), max_live=10 ** 9, max_reuse=reuse,
                      persistence_threshold=640)


@pytest.mark.parametrize("reuse,hpz", list(MEASURED), ids=[f"reuse{r}-hpz{h}" for r, h in MEASURED])
def test_replay_equals_what_deepspeed_sent(tiny_trace, reuse, hpz):
    steps = comm.simulate(tiny_trace, _knobs(reuse), world=4, hpz=hpz, accum=2, steps=3)
    assert [4 * (s["gather_world"] + s["gather_node"]) for s in steps] == MEASURED[(reuse, hpz)]
    assert [4 * s["reduce_world"] for s in steps] == [1763840] * 3


def test_replay_with_activation_checkpointing_equals_what_deepspeed_sent():
    trace = comm.model_trace(_cfg(TINY), checkpointing=True)
    for (reuse, hpz), want in MEASURED_CHECKPOINTING.items():
        steps = comm.simulate(trace, _knobs(reuse), world=4, hpz=hpz, accum=2, steps=3)
        assert [4 * (s["gather_world"] + s["gather_node"]) for s in steps] == want, (reuse, hpz)


def test_tiny_trace_sees_every_parameter_module_forward_and_backward(tiny_trace):
    assert sum(tiny_trace.numel) == 220480
    fetched = Counter((m, fwd) for kind, m, fwd in tiny_trace.events if kind == "fetch")
    with_params = [i for i, ps in enumerate(tiny_trace.modules) if ps]
    assert len(with_params) == 21  # 7 linears + 2 norms per layer, embedding, final norm, lm_head
    assert all(fetched[(m, True)] == 1 and fetched[(m, False)] == 1 for m in with_params)


def test_formulas_of_the_docstring_hold_for_llama_7b(llama7b):
    """flat: A(G+B)+Q over W; hpZ: G+Q over W and B+(A-1)(G+B) within the node; A R reduce-scattered."""
    recipe, cfg, trace = llama7b
    w, h, a = 32, 8, 3
    zero = build_config(recipe, w, cfg.hidden_size, True)["zero_optimization"]
    knobs = comm.Knobs.from_ds(zero)
    per = [math.ceil(e / w) for e in trace.numel]  # one rank's shard of each tensor
    persistent = [e <= knobs.persistence_threshold for e in trace.numel]
    g = sum(s for s, p in zip(per, persistent) if not p)
    q = sum(s for s, p in zip(per, persistent) if p)
    flat = comm.simulate(trace, knobs, w, 1, a)[-1]
    b = (flat["gather_world"] - q) / a - g
    assert 0.8 * g < b < g, "the backward should gather most weights again, minus the last layers kept"
    hpz = comm.simulate(trace, knobs, w, h, a)[-1]
    assert hpz["gather_world"] == g + q
    assert hpz["gather_node"] * h == (b + (a - 1) * (g + b)) * w
    assert flat["reduce_world"] == hpz["reduce_world"] == a * sum(s * w for s in per)


def test_reduce_scatter_is_per_micro_batch_and_all_gathers_shrink_with_hpz(llama7b):
    recipe, cfg, trace = llama7b
    knobs = comm.Knobs.from_ds(build_config(recipe, 16, cfg.hidden_size, True)["zero_optimization"])
    one, two = (comm.simulate(trace, knobs, 16, 1, a)[-1] for a in (1, 2))
    assert two["reduce_world"] == 2 * one["reduce_world"]
    links = comm.Links(2, 8, 200, 4800)
    flat = comm.traffic(two, comm.Setting("flat", 1), trace, links, 2, 2, 2)
    step = comm.simulate(trace, knobs, 16, 8, 2)[-1]
    hpz = comm.traffic(step, comm.Setting("hpZ", 8), trace, links, 2, 2, 2)
    quant = comm.traffic(step, comm.Setting("q", 8, True, True), trace, links, 2, 2, 2)
    assert hpz.gather_inter < 0.3 * flat.gather_inter
    assert hpz.reduce_inter == flat.reduce_inter
    assert quant.gather_inter == pytest.approx(hpz.gather_inter * (1 + comm.QWZ_SCALE_BYTES) / 2)
    assert quant.reduce_inter < 0.2 * hpz.reduce_inter
    assert flat.seconds > hpz.seconds > quant.seconds


@pytest.mark.parametrize("recipe_file", ["llama2-7b-medtuned.yaml", "llama2-13b-medtuned.yaml"])
def test_plan_prints_the_communication_table_offline(recipe_file, monkeypatch):
    from medtune.models import configs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = config.load(RECIPES / recipe_file, check_files=False)
    cfg = configs.load_config(recipe.model)
    trace = comm.model_trace(cfg, recipe.model.gradient_checkpointing)
    for nodes in (2, 4):
        for gpu in ("a100", "h100"):
            links = comm.Links(nodes, 8, 200, comm.NVLINK_GBPS[gpu])
            cp = comm.plan(recipe, cfg, links, gpu, 0.5, trace=trace)
            text = comm.table(cp)
            assert [r.setting.name for r in cp.rows] == ["flat ZeRO-3", "hpZ (8)", "hpZ (8) + qwZ + qgZ"]
            assert "all-gather GB" in text and "reduce-scatter GB" in text and "recommended:" in text
            flat, hpz, quant = cp.rows
            assert flat.seconds > hpz.seconds > quant.seconds
            # more nodes: the same bytes per GPU cross nodes at the same per-node bandwidth
            assert 0.5 < flat.gather_inter / (flat.gather_inter + flat.gather_intra) * 8 < 1.01
            assert "zero.hierarchy auto" in text.splitlines()[-1]


def test_compute_time_uses_the_flop_model(llama7b):
    from medtune.models.flops import PEAK_TFLOPS, FlopModel

    recipe, cfg, trace = llama7b
    cp = comm.plan(recipe, cfg, comm.Links(4, 8, 200, 7200), "h100", 0.5, trace=trace)
    tokens = recipe.train.grad_accum * recipe.data.max_tokens
    assert cp.compute_seconds == pytest.approx(FlopModel.from_config(cfg).linear_per_token * tokens
                                               / (PEAK_TFLOPS["H100 SXM"] * 1e12 * 0.5))
    assert 0.5 < cp.compute_seconds < 0.8
    ckpt = config.load(RECIPES / "llama2-7b-medtuned.yaml", ["model.gradient_checkpointing=true"],
                       check_files=False)
    again = comm.plan(ckpt, cfg, comm.Links(4, 8, 200, 7200), "h100", 0.5, trace=trace)
    assert again.compute_seconds == pytest.approx(cp.compute_seconds * 8 / 6)  # the forward runs twice


def test_one_node_recommends_auto_and_lists_flat_only(llama7b):
    recipe, cfg, trace = llama7b
    cp = comm.plan(recipe, cfg, comm.Links(1, 8, 200, 4800), "a100", 0.5, trace=trace)
    assert [r.setting.name for r in cp.rows] == ["flat ZeRO-3"]
    assert cp.rows[0].gather_inter == cp.rows[0].reduce_inter == 0
    assert "one node" in comm.table(cp)


def test_plan_cli_prints_both_sections_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "plan.json"
    code = cli.main(["plan", str(RECIPES / "llama2-7b-medtuned.yaml"), "--nodes", "2", "--gpus-per-node", "8",
                     "--gpu", "h100", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "per GPU, GiB" in text and "communication per optimizer step and GPU" in text
    assert "7200 Gb/s per GPU (900 GB/s NVLink)" in text and "200 Gb/s per node (25 GB/s" in text
    data = json.loads(out.read_text())
    assert [len(v) for v in data["logged_per_step"].values()] == [3, 3, 3]


# ---------------------------------------------------------------- zero.hierarchy and friends

def test_hierarchy_auto_off_and_sizes():
    assert hierarchy.hierarchy_size("auto", 16, 8)[0] == 8
    assert hierarchy.hierarchy_size("auto", 8, 8)[0] == 1
    assert hierarchy.hierarchy_size("auto", 4, 1)[0] == 1
    assert hierarchy.hierarchy_size("off", 16, 8)[0] == 1
    assert hierarchy.hierarchy_size(False, 16, 8)[0] == 1      # YAML's `off`
    assert hierarchy.hierarchy_size(True, 16, 8)[0] == 8       # YAML's `on`
    assert hierarchy.hierarchy_size(2, 16, 8)[0] == 2
    for bad in (3, 16, 0):
        with pytest.raises(ValueError):
            hierarchy.hierarchy_size(bad, 16, 8)


def _recipe(*overrides):
    return config.load(RECIPES / "demo.yaml", list(overrides))


def test_problems_name_the_file_and_key_in_one_line():
    (line,) = hierarchy.problems(_recipe("zero.hierarchy=3", "launch.procs=2"), "r.yaml", world=4, has_gpu=None)
    assert line.startswith("r.yaml: zero.hierarchy = 3: must divide the GPUs per node (launch.procs = 2)")
    found = hierarchy.problems(_recipe("zero.quantized_weights=true", "zero.quantized_gradients=true"), "r.yaml",
                          world=2, has_gpu=False)
    assert len(found) == 2 and all("\n" not in f and "CUDA" in f for f in found)
    assert found[0].startswith("r.yaml: zero.quantized_weights = true:")
    assert hierarchy.problems(_recipe("zero.quantized_weights=true"), "r.yaml", world=2, has_gpu=None) == []


def test_resolve_refuses_quantized_on_cpu_and_describes_the_choice():
    from medtune.base.errors import UserError

    with pytest.raises(UserError, match="zero.quantized_gradients = true: DeepSpeed's qgZ"):
        hierarchy.resolve(_recipe("zero.quantized_gradients=true"), world=2, has_gpu=False)
    zp = hierarchy.resolve(_recipe("launch.procs=2", "launch.nodes=2"), world=4, has_gpu=False)
    assert zp.hpz == 2 and "hpZ on" in zp.describe() and "zero.hierarchy=auto" in zp.describe()
    assert hierarchy.resolve(_recipe("launch.procs=2"), world=2, has_gpu=False).hpz == 1
    assert hierarchy.resolve(_recipe("zero.hierarchy=off", "launch.procs=2"), world=4, has_gpu=False).hpz == 1


def test_train_refuses_a_bad_hierarchy_and_cpu_quantization_before_any_rank(tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    code = cli.main(["train", str(RECIPES / "demo.yaml"), "launch.procs=2", "zero.hierarchy=3",
                     "--run-dir", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["medtune: error: command line: zero.hierarchy = 3: must divide the GPUs per "
                                 "node (launch.procs = 2) and the world size (2), so that each group sits "
                                 "within one node; use a divisor, auto or off"]
    assert not run.exists()
    if not torch.cuda.is_available():
        code = cli.main(["train", str(RECIPES / "demo.yaml"), "zero.quantized_weights=true",
                         "--run-dir", str(run)])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and "zero.quantized_weights = true" in line and "CUDA" in line
        assert not run.exists()


def test_comm_log_flag_becomes_a_recipe_override():
    args = cli._parser().parse_args(["train", "r.yaml", "--comm-log"])
    assert cli._run_overrides(args) == ["logging.comm_log=true"]
    for verb in (["launch", "r.yaml", "--hostfile", "h"], ["slurm", "r.yaml", "--nodes", "1",
                                                         "--gpus-per-node", "0"]):
        assert cli._parser().parse_args([*verb, "--comm-log"]).comm_log


def test_comm_log_totals_take_the_cumulative_timer_once():
    # DeepSpeed's layout: {op: {message size: [calls, latencies, algbw, busbw]}}; each "latency"
    # is the op's time since its timer was reset, so the op's time is the largest
    comms = {"all_gather_into_tensor": {4096: [2, [1.0, 3.0], [], []], 64000: [1, [6.5], [], []]},
             "reduce_scatter_tensor": {256000: [1, [2.0], [], []]}}
    assert comm_log.totals(comms) == {
        "all_gather_into_tensor": {"calls": 3, "bytes": 2 * 4096 + 64000, "ms": 6.5},
        "reduce_scatter_tensor": {"calls": 1, "bytes": 256000, "ms": 2.0}}
    record = {"ops": comm_log.totals(comms)}
    assert comm_log.step_bytes(record, comm.ALL_GATHER_OPS) == 72192
