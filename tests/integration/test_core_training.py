"""Real 2-rank ZeRO-3 runs on CPU checked against plain PyTorch.

One run (3 optimizer steps, packed rows, gradient accumulation 2, fp32,
clipping and weight decay on) is shared by the tests of this module.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medtune import config
from medtune.data.packing import plan_epoch
from medtune.data.prepare import prepare
from medtune.data.tokenize import IGNORE
from medtune.engine import model as engine_model
from medtune.data.packed import PackedData
from medtune.engine.trainer import total_steps
from medtune.models.flops import FlopModel
from medtune.kernels.loss import token_ce_sum
from tests.conftest import RECIPES
from tests.integration.helpers import load_weights, medtune, metrics, save_tiny_model, write_recipe

WORLD, ACCUM, STEPS = 2, 2, 3
SCALARS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/packing_fill",
           "perf/tokens_per_s", "perf/tokens_per_s_per_rank", "perf/tflops_per_rank")


def _recipe(tmp: Path, init: Path, normalisation: str, loss: str = "standard") -> Path:
    return write_recipe(tmp / f"equiv-{normalisation}-{loss}.yaml", {
        "base": str(RECIPES / "data" / "demo.yaml"),
        # activation checkpointing on: recomputation must not change a single gradient
        "model": {"name_or_path": str(init), "dtype": "fp32",
                  "gradient_checkpointing": normalisation == "tokens"},
        # attention: auto, the per-sample varlen kernel on CPU; small chunks so a row spans several
        "kernels": {"attention": "auto", "loss": loss, "loss_chunk_tokens": 64},
        "data": {"max_tokens": 512},
        "train": {"max_steps": STEPS, "grad_accum": ACCUM, "lr": 1e-3, "warmup_steps": 1,
                  "scheduler": "cosine", "weight_decay": 0.1, "max_grad_norm": 1.0, "seed": 0,
                  "loss_normalisation": normalisation},
        "launch": {"procs": WORLD},
        "logging": {"every": 1, "progress": False},
    })


@pytest.fixture(scope="module")
def init_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("init") / "tiny-llama", seed=0)


@pytest.fixture(scope="module")
def token_run(tmp_path_factory, init_model) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("token-run")
    recipe = _recipe(tmp, init_model, "tokens")
    medtune("train", str(recipe), "--run-dir", str(tmp / "run"))
    return recipe, tmp / "run"


@pytest.fixture(scope="module")
def chunked_run(tmp_path_factory, init_model) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("chunked-run")
    recipe = _recipe(tmp, init_model, "tokens", loss="chunked")
    medtune("train", str(recipe), "--run-dir", str(tmp / "run"))
    return recipe, tmp / "run"


def reference_weights(recipe_path: Path, init: Path) -> dict[str, torch.Tensor]:
    """The same 3 steps in one process: unpacked samples, right-padded, plain AdamW."""
    from transformers import AutoConfig, AutoModelForCausalLM, get_scheduler

    recipe = config.load(recipe_path)
    data = PackedData.build(prepare(recipe, log=lambda _: None).dataset, recipe.data.max_tokens, 0,
                            FlopModel.from_config(AutoConfig.from_pretrained(init)))
    net = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32, attn_implementation="sdpa")
    net.train()
    t = recipe.train
    opt = torch.optim.AdamW(engine_model.param_groups(net, t.weight_decay), lr=t.lr,
                            betas=t.adam_betas, eps=t.adam_eps)
    sched = get_scheduler(t.scheduler, opt, num_warmup_steps=t.warmup_steps,
                          num_training_steps=total_steps(recipe, data, WORLD))
    plan = plan_epoch(data.pack_flops, WORLD * ACCUM, WORLD, recipe.data.seed, epoch=0)
    for step in plan[:STEPS]:
        ids = [i for slots in step.slots for p in slots if p is not None for i in data.packs[p]]
        rows = data.dataset[ids]
        longest = max(len(x) for x in rows["input_ids"])
        input_ids = torch.zeros(len(ids), longest, dtype=torch.long)
        labels = torch.full((len(ids), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros(len(ids), longest, dtype=torch.long)
        for r, (x, y) in enumerate(zip(rows["input_ids"], rows["labels"])):
            input_ids[r, :len(x)] = torch.tensor(x)
            labels[r, 1:len(y)] = torch.tensor(y[1:])
            mask[r, :len(x)] = 1
        logits = net(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        loss = token_ce_sum(logits, labels) / (labels != IGNORE).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), t.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
    return {k: v.detach() for k, v in net.state_dict().items()}


def relative_errors(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    assert set(got) <= set(ref) and got, f"unexpected tensors {set(got) - set(ref)}"
    return {k: ((got[k].float() - ref[k]).norm() / ref[k].norm()).item() for k in got}


def test_zero3_packed_accumulated_matches_plain_pytorch(token_run, init_model):
    recipe, run = token_run
    errors = relative_errors(load_weights(run / "export"), reference_weights(recipe, init_model))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst}: relative difference {errors[worst]:.2e}"
    initial = load_weights(init_model)
    moved = max(((load_weights(run / "export")[k] - initial[k]).norm() / initial[k].norm()).item()
                for k in errors)
    assert moved > 1e-3, "training did not change the weights"


def test_chunked_loss_head_trains_like_the_standard_one(chunked_run, token_run, init_model):
    """Under 2-rank ZeRO-3 with accumulation 2: the same losses and gradient norms, the same weights."""
    recipe, run = chunked_run
    standard = metrics(token_run[1])
    for got, ref in zip(metrics(run), standard, strict=True):
        for key in ("train/loss", "train/grad_norm"):
            assert abs(got[key] - ref[key]) <= 1e-5 * abs(ref[key]), (got["step"], key, got[key], ref[key])
    errors = relative_errors(load_weights(run / "export"), reference_weights(recipe, init_model))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst}: relative difference {errors[worst]:.2e}"


def test_mean_of_micro_batch_means_is_caught(tmp_path, init_model):
    """The same comparison must fail when the loss is a mean of per-micro-batch means."""
    recipe = _recipe(tmp_path, init_model, "micro_mean")
    medtune("train", str(recipe), "--run-dir", str(tmp_path / "run"))
    errors = relative_errors(load_weights(tmp_path / "run" / "export"),
                             reference_weights(recipe, init_model))
    assert max(errors.values()) > 1e-3


def test_export_loads_and_gives_the_engines_logits(token_run):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, run = token_run
    probe = load_file(str(run / "probe.safetensors"))
    net = AutoModelForCausalLM.from_pretrained(run / "export")
    with torch.no_grad():
        logits = net(input_ids=probe["input_ids"]).logits
    torch.testing.assert_close(logits, probe["logits"], rtol=1e-5, atol=1e-5)


def test_tensorboard_has_every_scalar_once_per_logging_step(token_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run = token_run
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    for tag in SCALARS:
        assert tag in acc.Tags()["scalars"], f"{tag} missing from TensorBoard"
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, STEPS + 1)), tag
    assert [m["step"] for m in metrics(run)] == list(range(1, STEPS + 1))


def test_run_directory_holds_what_resume_and_export_need(token_run):
    _, run = token_run
    for rel in ("recipe.yaml", "deepspeed_config.json", "hf/config.json", "logs/launcher.log",
                f"checkpoints/step-{STEPS:08d}/COMPLETE", "checkpoints/latest"):
        assert (run / rel).exists(), rel
    assert config.load(run / "recipe.yaml").train.max_steps == STEPS


def test_export_from_checkpoint_matches_the_run_export(token_run, tmp_path):
    _, run = token_run
    medtune("export", str(run), "--out", str(tmp_path / "again"))
    a, b = load_weights(run / "export"), load_weights(tmp_path / "again")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_each_rank_holds_half_of_the_model_states(token_run):
    """fp32 ZeRO-3 with AdamW: 20 bytes per parameter (weights, master, two moments, gradients) in all."""
    _, run = token_run
    params = sum(t.numel() for t in load_weights(run / "export").values())
    per_rank = metrics(run)[0]["memory/model_states_mib"] * 2**20
    assert 0.5 <= per_rank / (20 * params) <= 0.55, per_rank / (20 * params)
