"""Task metrics during training: `medtune eval` on the sharded ZeRO-3 model, every rank taking part.

`task_metrics` reads the evaluation recipe ``train.eval_tasks`` (the same
sets, limits, instructions and prompts as `medtune eval`), generates with the
model being trained and scores with `medtune.evaluation.run.report`, the code
`medtune eval` ends in, so each value equals what ``medtune eval`` reports for
that step's exported checkpoint.

Generation is sharded as ``medtune eval`` shards it over ranks (sample i on
rank ``i % world``, the same batches), but under ZeRO-3 every forward pass is
a collective (each layer's parameters are all-gathered from their shards), so
the ranks must run the same number of forward passes in lockstep:

* ``generate(..., synced_gpus=True)``: a rank whose batch has stopped keeps
  running dummy forward passes until every rank's batch has (transformers'
  rule for ZeRO-3, as DeepSpeed-Chat and TRL call it);
* every rank runs the same number of ``generate`` calls: a rank with fewer
  samples pads its list with a copy of its shortest prompt (whose answer is
  dropped); being shortest, the copy sorts last and leaves the other batches
  as ``medtune eval`` forms them.

No rank ever holds the whole model. Rank 0 gathers the answers, scores them,
writes ``RUN_DIR/evals/step-N/`` (``results.json``, ``results.md``,
``generations.jsonl`` as ``medtune eval`` writes them, and one
``<set>.jsonl`` per set) and broadcasts the metrics, so every rank returns
the same dict. The training RNG (CPU and CUDA) is forked and restored, the
model's train/eval mode and attention implementation restored, the data
position never read.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from medtune.evaluation import generate as gen
from medtune.evaluation import run, sets

GENERATION_ATTENTION = ("sdpa", "eager")
"""The attention implementations generation uses: transformers' own, as ``medtune eval``
loads an export (``sdpa`` where the model supports it). medtune's varlen backends read
packed-row bounds that generation's padded, cached batches do not have."""


def task_metrics(engine, tokenizer, recipe, step: int, run_dir: Path, rank: int, world: int,
                 say: Callable[[str], None] = print) -> dict[str, float]:
    """Score the model at `step` on ``recipe.train.eval_tasks``; a collective every rank calls.

    `engine`: the DeepSpeed engine (or the bare model: anything whose
    ``.module`` or itself is the transformers model); `tokenizer`: the
    training tokenizer; `recipe`: the training recipe (``train.eval_tasks``:
    path of an evaluation recipe, ``train.eval_tasks_limit``: samples per set,
    None for the eval recipe's own limits). Returns, on every rank, ``{"eval/<set>/<metric>":
    value}`` for each float metric `medtune eval` reports for the set
    (NER: ``precision``, ``recall``, ``f1`` strict IOB2, ``lenient_f1``,
    ``seed_compat_f1``; label tasks: ``accuracy``, ``micro_f1``, ``macro_f1``...)
    plus ``parse_failure_rate``. Raises `RecipeError` for a bad evaluation
    recipe (every rank reads it, so every rank raises).
    """
    import torch

    path = str(recipe.train.eval_tasks)
    eval_recipe = sets.load(path)
    loaded = run._load_sets(eval_recipe, path, getattr(recipe.train, "eval_tasks_limit", None), None)
    samples = [smp for _, set_samples, _ in loaded for smp in set_samples]
    model = getattr(engine, "module", engine)
    device = getattr(engine, "device", None) or model.device
    trained = getattr(getattr(recipe, "data", None), "template", eval_recipe.template)
    if rank == 0 and trained != eval_recipe.template:
        say(f"{path}: template {eval_recipe.template!r} is not the one this run trains with "
            f"({trained!r}): the prompts differ from training's")
    progress = bool(getattr(getattr(recipe, "logging", None), "progress", True))

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    began = time.perf_counter()
    with torch.random.fork_rng(devices=devices), _generating(model):
        answers = _generate_sharded(model, tokenizer, eval_recipe, samples, rank, world, device, step,
                                    progress)
    took = time.perf_counter() - began
    metrics = None
    if rank == 0:
        metrics = _score(loaded, answers, eval_recipe, path, step, run_dir, world, took)
        say(f"step {step}: task metrics on {len(samples)} samples in {took:.1f}s: "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.endswith(("/f1", "/accuracy"))))
    if world > 1:
        import torch.distributed as dist

        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics


def _generate_sharded(model, tokenizer, eval_recipe, samples, rank: int, world: int, device,
                      step: int, progress: bool = True) -> dict[int, str] | None:
    """Every rank generates its round-robin share in lockstep; rank 0 gets all answers (others None)."""
    from tqdm import tqdm

    mine = gen.shard(len(samples), rank, world)
    prompts = [gen.prompt_ids(samples[i].record, eval_recipe.template, tokenizer) for i in mine]
    share = -(-len(samples) // world)  # the largest share: every rank makes as many generate calls
    filler = min(prompts, key=len) if prompts else \
        gen.prompt_ids(samples[0].record, eval_recipe.template, tokenizer)
    padded = prompts + [filler] * (share - len(prompts))
    g = eval_recipe.generation
    bar = tqdm(total=len(padded), desc=f"eval step {step}", unit="sample",
               disable=rank != 0 or not progress, dynamic_ncols=True, leave=False)
    try:
        texts = gen.generate(model, tokenizer, padded, g.max_new_tokens, g.num_beams, g.batch_size,
                             device, progress=bar.update,
                             stop=run.stops(model, tokenizer, eval_recipe.template),
                             synced_gpus=world > 1, use_cache=True)
    finally:
        bar.close()
    return gen.gather(dict(zip(mine, texts[:len(prompts)])), world)


class _generating:
    """Eval mode and a generation attention for the block; the previous mode and attention after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.training = self.model.training
        self.attention = getattr(self.model.config, "_attn_implementation", None)
        if self.attention not in (None, *GENERATION_ATTENTION):
            self._set(_generation_attention(self.model))
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        if self.attention not in (None, *GENERATION_ATTENTION):
            self._set(self.attention)
        self.model.train(self.training)
        return False

    def _set(self, name: str) -> None:
        self.model.set_attn_implementation(name)


def _generation_attention(model) -> str:
    """``sdpa`` where the model supports it, else ``eager`` (transformers' own default choice)."""
    return "sdpa" if getattr(model, "_supports_sdpa", False) else "eager"


def _score(loaded, answers: dict[int, str], eval_recipe, path: str, step: int, run_dir: Path, world: int,
           took: float) -> dict[str, float]:
    """Rank 0: `run.report` into RUN_DIR/evals/step-N, one JSONL per set, and the flat metrics."""
    from medtune.base.fsutil import write_atomic

    out = Path(run_dir) / "evals" / f"step-{step}"
    g = eval_recipe.generation
    meta = {"model": f"{run_dir} step {step} (during training)", "recipe": path,
            "template": eval_recipe.template,
            "generation": {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams,
                           "batch_size": g.batch_size, "greedy": g.num_beams == 1},
            "ranks": world, "seconds": round(took, 2)}
    at, per_set = 0, []
    for s, set_samples, malformed in loaded:
        per_set.append((s, set_samples, malformed, [answers[at + k] for k in range(len(set_samples))]))
        at += len(set_samples)
    results = run.report(per_set, meta, out, generations=True)
    for s, set_samples, _, set_answers in per_set:
        name = sets.set_name(s)
        write_atomic(out / f"{name}.jsonl", "".join(
            json.dumps({"set": name, "index": x.index, "answer": a, "gold": x.record.output}) + "\n"
            for x, a in zip(set_samples, set_answers)))
    return flat_metrics(results)


def flat_metrics(results: dict) -> dict[str, float]:
    """``{"eval/<set>/<metric>": value}`` from `run.report`'s results: every float metric of each set.

    Counts (tokens, entities) stay out; NER's lenient and seed-compatible F1 come as
    ``lenient_f1`` and ``seed_compat_f1``; each set adds ``parse_failure_rate``.
    """
    out: dict[str, float] = {}
    for name, e in results["sets"].items():
        if not e.get("task"):
            continue
        m = e["metrics"]
        values = {k: v for k, v in m.items() if isinstance(v, float)}
        if isinstance(m.get("lenient"), dict):
            values["lenient_f1"] = m["lenient"]["f1"]
        if e.get("seed_compat"):
            values["seed_compat_f1"] = e["seed_compat"]["f1"]
        values["parse_failure_rate"] = float(e["parse"]["failure_rate"])
        out.update({f"eval/{name}/{k}": float(v) for k, v in values.items()})
    return out
