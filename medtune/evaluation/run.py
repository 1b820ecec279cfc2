"""`medtune eval`: read the held-out sets, generate, parse, score, write the report.
`medtune score`: the same report from a file of generations made elsewhere (`score`).

    OUT/results.json     every set's metrics, parse counts and the paper's figures
    OUT/results.md       one row per set: ours beside the paper's 7B / 13B
    OUT/generations.jsonl  every prompt's answer and its gold output (for error analysis)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from medtune.base.errors import UserError
from medtune.evaluation import generate as gen
from medtune.evaluation import metrics, sets
from medtune.base.fsutil import write_atomic


def stops(model, tok, template: str) -> list[int]:
    """Where generation stops: where training taught the model to stop (EOS and the
    template's turn terminator, `medtune.data.tokenize.stop_token_ids`) and the model's own
    generation-config EOS ids."""
    from medtune.data.tokenize import stop_token_ids

    return gen.stop_ids(model, tok, stop_token_ids(tok, template))


def evaluate(model_dir: str, recipe: sets.EvalRecipe, out: Path, recipe_file: str = "",
             limit: int | None = None, only: list[str] | None = None,
             say=lambda m: print(f"[medtune eval] {m}", file=sys.stderr, flush=True)) -> dict | None:
    """Evaluate `model_dir` on the recipe's sets; rank 0 writes and returns the results."""
    r = gen.ranks()
    gen.init_distributed(r)
    loaded = _load_sets(recipe, recipe_file, limit, only)
    model, tok, device = gen.load(model_dir)
    say(f"rank {r.rank}/{r.world}: {model_dir} on {device}")

    all_samples = [smp for _, samples, _ in loaded for smp in samples]
    mine = gen.shard(len(all_samples), r.rank, r.world)
    prompts = [gen.prompt_ids(all_samples[i].record, recipe.template, tok) for i in mine]
    began = time.perf_counter()
    g = recipe.generation
    texts = gen.generate(model, tok, prompts, g.max_new_tokens, g.num_beams, g.batch_size, device,
                         stop=stops(model, tok, recipe.template))
    took = time.perf_counter() - began
    answers = gen.gather(dict(zip(mine, texts)), r.world)
    gen.finish_distributed(r)
    if answers is None:
        return None
    say(f"generated {len(all_samples)} answers in {took:.1f}s")

    meta = {"model": str(model_dir), "recipe": recipe_file, "template": recipe.template,
            "generation": {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams,
                           "batch_size": g.batch_size, "greedy": g.num_beams == 1},
            "ranks": r.world, "seconds": round(took, 2)}
    at, per_set = 0, []
    for s, samples, malformed in loaded:
        per_set.append((s, samples, malformed, [answers[at + k] for k in range(len(samples))]))
        at += len(samples)
    return report(per_set, meta, out, generations=True)


def report(per_set: list, meta: dict, out: Path, generations: bool = True) -> dict:
    """Score every set's answers and write OUT/results.json, OUT/results.md (and generations.jsonl).

    `per_set`: ``(EvalSet, samples, malformed record count, answers)`` per set, `answers`
    parallel to `samples`; `meta`: the run's fields of results.json (model, recipe, template,
    generation, ranks, seconds). `medtune eval` and `medtune score` both end here, so the same
    answers give the same files. Returns the results (the dict written to results.json).
    """
    out.mkdir(parents=True, exist_ok=True)
    paper = sets.paper_results()
    results: dict = {**meta, "paper_source": _source(), "sets": {}}
    rows = []
    for s, samples, malformed, answers_here in per_set:
        name = sets.set_name(s)
        if not samples:
            results["sets"][name] = {"task": None, "samples": 0, "malformed_records": malformed}
            continue
        task = samples[0].record.task
        score = metrics.score_set(task, [x.record.input for x in samples],
                                  [x.record.gold for x in samples], answers_here)
        entry = {"split": s.split, **score.to_dict(), "malformed_records": malformed,
                 "headline": metrics.HEADLINE[task]}
        if s.paper and s.paper in paper:
            entry["paper"] = {"key": s.paper, **paper[s.paper]}
        results["sets"][name] = entry
        rows += [json.dumps({"set": name, "index": x.index, "answer": a, "gold": x.record.output}) + "\n"
                 for x, a in zip(samples, answers_here)]
    if generations:
        write_atomic(out / "generations.jsonl", "".join(rows))
    write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_atomic(out / "results.md", table(results))
    return results


def _source() -> str:
    from medtune.config import read_yaml

    return read_yaml(Path(__file__).parent / "paper_results.yaml")["source"]


def _load_sets(recipe: sets.EvalRecipe, recipe_file: str, limit: int | None,
               only: list[str] | None) -> list:
    """``(EvalSet, samples, malformed)`` for the recipe's sets (those named in `only`, if given)."""
    chosen = [s for s in recipe.sets if not only or sets.set_name(s) in only]
    missing = set(only or ()) - {sets.set_name(s) for s in recipe.sets}
    if missing:
        from medtune.base.errors import RecipeError
        raise RecipeError([f"--sets: {', '.join(sorted(missing))} not in {recipe_file}; its sets are "
                           f"{', '.join(sets.set_name(s) for s in recipe.sets)}"])
    return [(s, *sets.read_set(s, recipe.mixture_seed, limit)) for s in chosen]


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


COLUMNS = ["set", "task", "n", "metric", "ours", "ours lenient", "seed-compatible",
           "paper 7B", "paper 13B", "parse failures"]


def table(results: dict) -> str:
    """The markdown report: one row per set, our three NER scores beside the paper's figures.

    ``ours``: the headline (NER: position-aligned entity F1, seqeval strict IOB2);
    ``ours lenient``: the same alignment, seqeval's default (conlleval-like) mode;
    ``seed-compatible``: the seed's token-keyed lenient score, the one the paper's
    figures are comparable with. Non-NER sets show their headline metric only.
    """
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"# medtune eval: {results['model']}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, e in results["sets"].items():
        if not e.get("task"):
            lines.append(f"| {name} | – | 0 |" + " – |" * (len(COLUMNS) - 3))
            continue
        key = e["headline"]
        paper = e.get("paper", {})
        row = [name, e["task"], str(e["samples"]), key, _pct(e["metrics"][key])]
        lenient = e["metrics"].get("lenient")
        row.append(_pct(lenient["f1"]) if lenient else "–")
        sc = e.get("seed_compat")
        row.append(f"{_pct(sc['f1'])} ({sc['tokens']} of {e['metrics']['tokens']} tokens)" if sc else "–")
        row += [fmt(paper.get("7b")), fmt(paper.get("13b")),
                f"{e['parse']['failures']} ({100 * e['parse']['failure_rate']:.1f}%)"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Figures in percent. NER, three entity-level F1 scores:",
              "- **ours**: medtune's headline. Line i of the answer tags input token i only when its token "
              "equals that token (whitespace normalised), otherwise it counts as O; seqeval strict IOB2.",
              "- **ours lenient**: the same alignment, seqeval's default (conlleval-like) mode, where an I "
              "after O starts an entity.",
              "- **seed-compatible**: the seed's script: each answer's `token : tag` lines keyed by token "
              "string (repeated tokens collapse, last tag wins), every distinct gold token looks up the "
              "generated tag (missing or not B/I/O: O), seqeval default mode.",
              "",
              "The paper's figures were computed the seed-compatible way: compare them with the "
              "**seed-compatible** column, not with ours.",
              f"Paper: {results['paper_source']}.", ""]
    return "\n".join(lines)


ANSWER_KEYS = ("answer", "output", "prediction", "predict")
"""The keys a generations file may carry the generated text under (exactly one per line);
``predict`` is LLaMA-Factory's ``generated_predictions.jsonl``."""
GOLD_KEYS = ("gold", "label")
"""The keys of the optional gold output text (``label``: LLaMA-Factory's)."""


def read_generations(path: Path, loaded: list) -> list:
    """Match a JSONL file of generations to the eval sets' samples; the answers per set.

    One JSON object per line (blank lines skipped):

    * ``set``: the set's name in the recipe (may be left out when one set is scored);
    * ``index`` (or ``id``): the record number in the split (``generations.jsonl`` of
      `medtune eval` has it), or ``input``: the record's input text (whitespace normalised;
      a repeated input takes the first sample of that input not yet taken); with neither,
      the line answers the set's first record not yet answered (file order, as
      LLaMA-Factory's ``generated_predictions.jsonl`` is written);
    * exactly one of ``answer``, ``output``, ``prediction``, ``predict``: the generated text;
    * ``gold`` or ``label`` (optional): the record's output text; when given it must equal
      the set's (ends stripped), which catches a file made from another split or order.

    `loaded`: ``(EvalSet, samples, malformed)`` per set. Returns ``(EvalSet, samples,
    malformed, answers)`` for every set the file has lines for, each of its samples
    answered exactly once. Raises UserError naming ``FILE:LINE`` for a line that is not
    such an object or names no sample, a sample answered twice or left without an
    answer, or a file with no lines for any of the sets.
    """
    by_name = {sets.set_name(s): (s, samples, malformed) for s, samples, malformed in loaded}
    answers: dict[str, dict[int, tuple[str, int]]] = {}
    by_input: dict[str, dict[str, list[int]]] = {}
    from medtune.data.formats.files import SourceError, text_lines

    if not path.is_file():
        raise UserError(f"{path}: no such generations file")
    try:
        numbered = list(text_lines(path))  # a BOM dropped, lines split at "\n" only
    except (OSError, SourceError) as err:
        raise UserError(f"{path}: cannot read it: {err}") from None
    for n, line in numbered:
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not JSON ({err.msg}); one object per line") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: a line is a JSON object with `answer` and `index` or `input`")
        name = row.get("set")
        if name is None:
            if len(by_name) != 1:
                raise UserError(f"{where}: no `set` key; name one of {', '.join(by_name)}")
            name = next(iter(by_name))
        if name not in by_name:
            raise UserError(f"{where}: set = {name!r} is not a set scored here "
                            f"({', '.join(by_name)}; see --sets)")
        s, samples, _ = by_name[name]
        keys = [k for k in ANSWER_KEYS if k in row]
        if len(keys) != 1 or not isinstance(row[keys[0]], str):
            raise UserError(f"{where}: give the generated text as exactly one string key of "
                            f"{', '.join(ANSWER_KEYS)} (found {', '.join(keys) or 'none'})")
        taken = answers.setdefault(name, {})
        index = _record_index(row, where, name, samples, taken, by_input)
        if index in taken:
            raise UserError(f"{where}: set {name} record {index} already answered on line {taken[index][1]}")
        gold = next((row[k] for k in GOLD_KEYS if k in row), None)
        want = samples[index].record.output.strip()
        if gold is not None and (not isinstance(gold, str) or gold.strip() != want):
            raise UserError(f"{where}: gold differs from record {index} of set {name} "
                            f"({s.path}, split {s.split}): the file was made from other data")
        taken[index] = (row[keys[0]], n)
    if not answers:
        raise UserError(f"{path}: no generations in it")
    out = []
    for name, got in answers.items():
        s, samples, malformed = by_name[name]
        lacking = [x.index for x in samples if x.index not in got]
        if lacking:
            raise UserError(f"{path}: set {name}: {len(lacking)} of {len(samples)} records have no "
                            f"generation (first: index {lacking[0]})")
        out.append((s, samples, malformed, [got[x.index][0] for x in samples]))
    order = list(by_name)
    return sorted(out, key=lambda t: order.index(sets.set_name(t[0])))


def _record_index(row: dict, where: str, name: str, samples: list, taken: dict, by_input: dict) -> int:
    """Which record of set `name` the generations line `row` answers (see `read_generations`).

    ``index``/``id`` as given; else the first record not in `taken` whose input
    equals ``input`` (whitespace normalised; `by_input` caches each set's inputs);
    else the set's first record not in `taken`. Raises UserError naming `where`.
    """
    index = row.get("index", row.get("id"))
    if index is not None:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(samples):
            raise UserError(f"{where}: index = {index!r}: set {name} has records 0..{len(samples) - 1} "
                            "here (after any limit)")
        return index
    if isinstance(row.get("input"), str):
        if name not in by_input:
            by_input[name] = {}
            for x in samples:
                by_input[name].setdefault(" ".join(x.record.input.split()), []).append(x.index)
        same = by_input[name].get(" ".join(row["input"].split()), [])
        free = [i for i in same if i not in taken]
        if not free:
            raise UserError(f"{where}: input matches no {'other ' if same else ''}record of set {name}")
        return free[0]
    free = [x.index for x in samples if x.index not in taken]
    if not free:
        raise UserError(f"{where}: set {name} has {len(samples)} records and all are answered "
                        "already (give `index` or `input` to say which record a line answers)")
    return free[0]


def score(generations: str | Path, recipe: sets.EvalRecipe, out: Path, recipe_file: str = "",
          limit: int | None = None, only: list[str] | None = None, model: str | None = None) -> dict:
    """`medtune score`: score a file of existing generations as `medtune eval` scores its own.

    Reads the recipe's sets (`limit`, `only` as in `evaluate`), matches the file's lines to
    their samples (`read_generations`) and writes OUT/results.json and OUT/results.md through
    `report`, the same code `medtune eval` ends in. `model`: the name results.md shows
    (default: the generations file). Returns the results.
    """
    path = Path(generations)
    loaded = _load_sets(recipe, recipe_file, limit, only)
    per_set = read_generations(path, loaded)
    meta = {"model": model or str(path), "recipe": recipe_file, "template": recipe.template,
            "generations": str(path.resolve()), "generation": None, "ranks": None, "seconds": None}
    return report(per_set, meta, out, generations=False)
