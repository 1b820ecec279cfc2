"""Step 2 of the GPU check: a 1-rank ZeRO-3 `medtune train`, killed mid-save, resumed, compared.

    python tools/gpu_resume_check.py --device cuda --work DIR [--json PATH]
    python tools/gpu_resume_check.py --device cpu  --work DIR          # the CPU rehearsal

Three real ``medtune train`` runs of one small recipe (the demo data, one rank,
``train.max_steps`` 12, a checkpoint every 4 steps, 2 packs per step):

1. an uninterrupted run (the reference);
2. the same run, beside it, held by medtune's test hook inside the save of
   step 8 (``tests.hooks.env(hold_save_at=8)``) and killed there with SIGKILL of its
   whole process group: a kill after a checkpoint exists, in the middle of the
   next one, at a point that does not depend on how fast the device is;
3. ``medtune train`` again on that run directory (``--resume auto``): it must
   resume from step 4 and finish.

The resumed run must equal the reference bit for bit: every per-step loss and
every exported weight. Then the export is reloaded with ``from_pretrained``
and its logits for the first sample are compared with those the trainer
computed under ZeRO-3 (``probe.safetensors``). If the resumed run differs, a
second uninterrupted run says whether the device itself repeats a run bit for
bit: the record shows both differences (the step still fails).

On ``cuda`` the model is a 4-layer Llama of hidden 256 (heads of 64) in bf16
with ``kernels.attention=torch_varlen``; on ``cpu`` the tiny Llama in fp32 with
``sdpa_varlen``. Prints what it did; ``--json`` writes the numbers; exit code 1
when a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS, SAVE_EVERY, HELD_AT = 12, 4, 8
GPU_MODEL = dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                 vocab_size=1000, tie_word_embeddings=False)


def write_recipe(path: Path, device: str) -> Path:
    """The small recipe of the check, composed on the repository's tiny Llama and demo data."""
    recipes = REPO / "recipes"
    tree = {
        "base": [str(recipes / "models" / "tiny-llama.yaml"), str(recipes / "data" / "demo.yaml")],
        "model": {"dtype": "bf16" if device == "cuda" else "fp32"},
        "data": {"max_tokens": 512},
        "train": {"max_steps": STEPS, "save_every": SAVE_EVERY, "grad_accum": 2, "lr": 2e-3,
                  "warmup_steps": 2, "seed": 0},
        "kernels": {"attention": "torch_varlen" if device == "cuda" else "sdpa_varlen"},
        "launch": {"procs": 1},
        "logging": {"progress": False, "every": 1},
    }
    if device == "cuda":
        tree["model"]["config"] = dict(GPU_MODEL)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def medtune(*args: str, env: dict | None = None, log: Path) -> subprocess.Popen:
    """``medtune ARGS`` started in its own process group, its output into `log`."""
    return subprocess.Popen([sys.executable, "-m", "medtune.cli", *args], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def finish(proc: subprocess.Popen, log: Path, what: str, timeout: float = 600) -> None:
    if proc.wait(timeout=timeout) != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}:\n{log.read_text()[-3000:]}")


def losses(run: Path) -> list[float]:
    return [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted((run / "export").glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def compare(run: Path, reference: Path) -> dict:
    """How far `run` is from `reference`: loss steps that differ, weights that differ, largest gaps."""
    got, want = losses(run), losses(reference)
    wg, ww = weights(run), weights(reference)
    differing = [k for k in ww if k not in wg or not bool((wg[k] == ww[k]).all())]
    worst = max((float((wg[k].float() - ww[k].float()).abs().max()) for k in differing if k in wg),
                default=0.0)
    loss_gap = max((abs(a - b) for a, b in zip(got, want)), default=0.0)
    return {"steps": len(got), "reference_steps": len(want),
            "losses_equal": got == want, "max_loss_diff": loss_gap,
            "weights_equal": not differing and wg.keys() == ww.keys(),
            "tensors_differing": len(differing), "tensors": len(ww), "max_weight_diff": worst}


def reload_export(run: Path, device: str) -> dict:
    """The export through ``from_pretrained`` and one forward pass, against the trainer's probe logits."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    net = AutoModelForCausalLM.from_pretrained(run / "export", dtype=dtype, attn_implementation="sdpa")
    net.to(device).eval()
    probe = load_file(str(run / "probe.safetensors"))
    with torch.no_grad():
        logits = net(input_ids=probe["input_ids"].to(device)).logits.float().cpu()
    ref = probe["logits"].float()
    rel = float((logits - ref).norm() / ref.norm().clamp_min(1e-12))
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    return {"reload_dtype": str(dtype).removeprefix("torch."), "reload_rel_diff": rel,
            "reload_tolerance": tolerance, "reload_finite": bool(torch.isfinite(logits).all()),
            "reload_ok": bool(torch.isfinite(logits).all()) and rel <= tolerance}


def main(argv: list[str] | None = None) -> int:
    from medtune.engine.checkpoint import latest
    from tests import hooks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--work", required=True, type=Path, help="a folder for the recipe and the runs")
    p.add_argument("--json", type=Path, help="write the numbers here")
    args = p.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDTUNE_CACHE", str(work / "cache"))
    began = time.perf_counter()
    recipe = write_recipe(work / "gpu-check.yaml", args.device)
    record: dict = {"device": args.device, "recipe": yaml.safe_load(recipe.read_text()),
                    "steps": STEPS, "killed_in_save_of_step": HELD_AT}

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {msg}", flush=True)

    started: list[subprocess.Popen] = []

    def medtune_(*a, **kw) -> subprocess.Popen:
        started.append(medtune(*a, **kw))
        return started[-1]

    try:
        prep = medtune_("prepare", str(recipe), log=work / "prepare.log")
        finish(prep, work / "prepare.log", "medtune prepare")
        say("data and tokenizer prepared")
        base, run = work / "reference", work / "resumed"
        ref_proc = medtune_("train", str(recipe), "--run-dir", str(base), log=work / "reference.log")
        held = medtune_("train", str(recipe), "--run-dir", str(run), env=hooks.env(hold_save_at=HELD_AT),
                       log=work / "killed.log")
        marker = run / "checkpoints" / f"step-{HELD_AT:08d}" / ".held"
        end = time.time() + 400
        while not marker.exists():
            if held.poll() is not None:
                raise RuntimeError(f"the run to kill ended first ({held.returncode}):\n"
                                   + (work / "killed.log").read_text()[-3000:])
            if time.time() > end:
                raise TimeoutError("the run to kill never reached the save of step "
                                   f"{HELD_AT}:\n" + (work / "killed.log").read_text()[-3000:])
            time.sleep(0.05)
        os.killpg(held.pid, signal.SIGKILL)
        held.wait()
        saved = latest(run)
        say(f"SIGKILL in the save of step {HELD_AT}; newest complete checkpoint: "
            f"{saved.name if saved else None}")
        record["checkpoint_after_kill"] = saved.name if saved else None
        if saved is None or saved.name != f"step-{SAVE_EVERY:08d}":
            raise RuntimeError(f"expected checkpoint step-{SAVE_EVERY:08d} after the kill, found {saved}")
        resume = medtune_("train", str(recipe), "--run-dir", str(run), log=work / "resumed.log")
        finish(resume, work / "resumed.log", "the resumed run")
        finish(ref_proc, work / "reference.log", "the uninterrupted run")
        resumed_from = f"resuming from {saved} at step {SAVE_EVERY}" in (work / "resumed.log").read_text()
        record["resumed_from_checkpoint"] = resumed_from
        say(f"resumed from step {SAVE_EVERY}: {resumed_from}; both runs done")
        record.update(compare(run, base))
        exact = record["losses_equal"] and record["weights_equal"] and record["steps"] == STEPS
        record["bit_exact"] = exact
        say(f"resumed vs uninterrupted: {record['steps']} steps, losses equal {record['losses_equal']} "
            f"(max diff {record['max_loss_diff']:.3g}), weights equal {record['weights_equal']} "
            f"({record['tensors_differing']}/{record['tensors']} tensors differ, max "
            f"{record['max_weight_diff']:.3g})")
        if not exact:
            again = work / "reference-2"
            finish(medtune_("train", str(recipe), "--run-dir", str(again), log=work / "reference-2.log"),
                   work / "reference-2.log", "the second uninterrupted run")
            record["repeat"] = compare(again, base)
            say(f"two uninterrupted runs: losses equal {record['repeat']['losses_equal']} (max diff "
                f"{record['repeat']['max_loss_diff']:.3g}), weights equal {record['repeat']['weights_equal']}")
        record.update(reload_export(run, args.device))
        say(f"export reloaded with from_pretrained ({record['reload_dtype']}): logits vs the trainer's "
            f"probe rel. diff {record['reload_rel_diff']:.2e} (tolerance {record['reload_tolerance']:g})")
        record["passed"] = bool(exact and resumed_from and record["reload_ok"])
    except Exception as err:  # recorded: the check goes on to its summary
        record["passed"] = False
        record["error"] = f"{type(err).__name__}: {err}"
        say(f"FAILED: {record['error']}")
        for log in sorted(work.glob("*.log")):  # the work folder does not come back from a lent machine
            print(f"\n----- last lines of {log.name} -----\n" + "\n".join(log.read_text().splitlines()[-40:]))
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    record["seconds"] = time.perf_counter() - began
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    say("resume check: " + ("passed" if record["passed"] else "FAILED"))
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
