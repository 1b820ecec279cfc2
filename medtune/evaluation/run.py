"""`medtune eval`: read the held-out sets, generate, parse, score, write the report.

    OUT/results.json     every set's metrics, parse counts and the paper's figures
    OUT/results.md       one row per set: ours beside the paper's 7B / 13B
    OUT/generations.jsonl  every prompt's answer and its gold output (for error analysis)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from medtune.evaluation import generate as gen
from medtune.evaluation import metrics, sets


def evaluate(model_dir: str, recipe: sets.EvalRecipe, out: Path, recipe_file: str = "",
             limit: int | None = None, only: list[str] | None = None, seed_compat: bool = False,
             say=lambda m: print(f"[medtune eval] {m}", file=sys.stderr, flush=True)) -> dict | None:
    """Evaluate `model_dir` on the recipe's sets; rank 0 writes and returns the results."""
    r = gen.ranks()
    gen.init_distributed(r)
    chosen = [s for s in recipe.sets if not only or sets.set_name(s) in only]
    missing = set(only or ()) - {sets.set_name(s) for s in recipe.sets}
    if missing:
        from medtune.config import RecipeError
        raise RecipeError([f"--sets: {', '.join(sorted(missing))} not in {recipe_file}; its sets are "
                           f"{', '.join(sets.set_name(s) for s in recipe.sets)}"])
    loaded = [(s, *sets.read_set(s, recipe.mixture_seed, limit)) for s in chosen]
    model, tok, device = gen.load(model_dir)
    say(f"rank {r.rank}/{r.world}: {model_dir} on {device}")

    all_samples = [smp for _, samples, _ in loaded for smp in samples]
    mine = gen.shard(len(all_samples), r.rank, r.world)
    prompts = [gen.prompt_ids(all_samples[i].record, recipe.template, tok) for i in mine]
    began = time.perf_counter()
    g = recipe.generation
    texts = gen.generate(model, tok, prompts, g.max_new_tokens, g.num_beams, g.batch_size, device)
    took = time.perf_counter() - began
    answers = gen.gather(dict(zip(mine, texts)), r.world)
    gen.finish_distributed(r)
    if answers is None:
        return None
    say(f"generated {len(all_samples)} answers in {took:.1f}s")

    out.mkdir(parents=True, exist_ok=True)
    paper = sets.paper_results()
    results: dict = {"model": str(model_dir), "recipe": recipe_file, "template": recipe.template,
                     "generation": {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams,
                                    "batch_size": g.batch_size, "greedy": g.num_beams == 1},
                     "ranks": r.world, "seconds": round(took, 2), "paper_source": _source(), "sets": {}}
    at = 0
    with open(out / "generations.jsonl", "w", encoding="utf-8") as fh:
        for s, samples, malformed in loaded:
            name = sets.set_name(s)
            answers_here = [answers[at + k] for k in range(len(samples))]
            at += len(samples)
            if not samples:
                results["sets"][name] = {"task": None, "samples": 0, "malformed_records": malformed}
                continue
            task = samples[0].record.task
            score = metrics.score_set(task, [x.record.input for x in samples],
                                      [x.record.gold for x in samples], answers_here, seed_compat)
            entry = {"split": s.split, **score.to_dict(), "malformed_records": malformed,
                     "headline": metrics.HEADLINE[task]}
            if s.paper and s.paper in paper:
                entry["paper"] = {"key": s.paper, **paper[s.paper]}
            results["sets"][name] = entry
            for x, a in zip(samples, answers_here):
                fh.write(json.dumps({"set": name, "index": x.index, "answer": a,
                                     "gold": x.record.output}) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(table(results))
    return results


def _source() -> str:
    from medtune.config import read_yaml

    return read_yaml(Path(__file__).parent / "paper_results.yaml")["source"]


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def table(results: dict) -> str:
    """The markdown report: one row per set, ours beside the paper's figures."""
    compat = any("seed_compat" in e for e in results["sets"].values())
    head = ["set", "task", "n", "metric", "ours"] + (["ours (seed token-keyed)"] if compat else []) \
        + ["paper 7B", "paper 13B", "parse failures"]
    lines = [f"# medtune eval: {results['model']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in results["sets"].items():
        if not e.get("task"):
            lines.append(f"| {name} | – | 0 | – | – |" + (" – |" if compat else "") + " – | – | – |")
            continue
        key = e["headline"]
        paper = e.get("paper", {})
        row = [name, e["task"], str(e["samples"]), key, _pct(e["metrics"][key])]
        if compat:
            sc = e.get("seed_compat")
            row.append(f"{_pct(sc['f1'])} ({sc['tokens']} of {e['metrics']['tokens']} tokens)" if sc else "–")
        fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        row += [fmt(paper.get("7b")), fmt(paper.get("13b")),
                f"{e['parse']['failures']} ({100 * e['parse']['failure_rate']:.1f}%)"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Figures in percent. NER: entity-level F1, seqeval strict IOB2, answers aligned to "
              "the input tokens by position.", f"Paper: {results['paper_source']}.", ""]
    return "\n".join(lines)
