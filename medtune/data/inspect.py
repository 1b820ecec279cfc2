"""``medtune inspect RECIPE``: see what a run would train on, before anything is launched.

Four parts, printed in order:

1. the resolved recipe, one ``key = value`` line per setting, each with the
   file that set it (a base, the recipe itself, ``command line``) or
   ``default``;
2. the first N samples of every source as the model sees them (the
   template, the tokenizer's special tokens), the tokens that carry the
   loss marked: in colour on a terminal, ``[[between brackets]]`` otherwise;
3. per source: records read, malformed, duplicates, samples kept, and the
   samples' token lengths (min / mean / max);
4. packing: packs of ``data.max_tokens``, their fill, and the optimizer
   steps per epoch at the recipe's ranks and accumulation
   (`medtune.data.packing.pack`, the planner training uses).

The data is prepared exactly as ``medtune prepare`` does it (the same cache,
so a later ``train`` finds it); no process group, rank or model is started.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, Sequence

from medtune import config
from medtune.data.tokenize import IGNORE

GREEN, RESET = "\033[1;32m", "\033[0m"
OPEN, CLOSE = "[[", "]]"
DEFAULT = "default"


def settings(recipe: config.Recipe, provenance: dict[str, str]) -> list[tuple[str, object, str]]:
    """``(dotted key, value, where)`` for every leaf of `recipe`; `where` is the file that set it or ``default``.

    A key a file set as a whole list (``data.sources``) names that file for
    every item under it.
    """
    out: list[tuple[str, object, str]] = []

    def walk(node, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            key = f"{prefix}{k}"
            if isinstance(v, (dict, list)) and v and key != "model.config":
                walk(v, key + ".")
            elif not isinstance(v, dict) or key == "model.config" or not v:
                out.append((key, v, _set_by(key, provenance)))
    walk(config.to_dict(recipe), "")
    return out


def _set_by(key: str, provenance: dict[str, str]) -> str:
    parts = key.split(".")
    while parts:
        probe = ".".join(parts)
        if probe in provenance:
            return provenance[probe]
        parts.pop()
    if any(k.startswith(key + ".") for k in provenance):  # model.config: its keys were set one by one
        return next(v for k, v in provenance.items() if k.startswith(key + "."))
    return DEFAULT


def marked(ids: Sequence[int], labels: Sequence[int], tokenizer, color: bool) -> str:
    """The sample's text with the loss-bearing tokens (label not -100) marked.

    Runs of labelled tokens are wrapped in ``[[...]]`` (or shown bold green
    with `color`). The text is the decode of all the ids, special tokens
    included, cut at run boundaries by decoding each prefix, so spaces a
    tokenizer attaches to a token stay where they are.
    """
    runs: list[tuple[int, int, bool]] = []  # [start, stop) and whether labelled
    for i, lab in enumerate(labels):
        on = lab != IGNORE
        if runs and runs[-1][2] == on:
            runs[-1] = (runs[-1][0], i + 1, on)
        else:
            runs.append((i, i + 1, on))
    full = tokenizer.decode(list(ids), skip_special_tokens=False)
    pieces, at = [], 0
    for start, stop, on in runs:
        prefix = tokenizer.decode(list(ids[:stop]), skip_special_tokens=False)
        if full.startswith(prefix) and len(prefix) >= at:
            text, at = full[at:len(prefix)], len(prefix)
        else:  # a decode that is not prefix-stable (rare byte pieces): decode the run alone
            text = tokenizer.decode(list(ids[start:stop]), skip_special_tokens=False)
        if on:
            text = f"{GREEN}{text}{RESET}" if color else f"{OPEN}{text}{CLOSE}"
        pieces.append(text)
    return "".join(pieces)


def report(recipe_path: str, overrides: Sequence[str] = (), n: int = 2, color: bool | None = None,
           out: Callable[[str], None] = print) -> None:
    """Print the inspection of `recipe_path` (see the module doc) through `out`.

    `n` samples per source are shown; `color` None colours only when stdout
    is a terminal. Raises `RecipeError` as ``medtune prepare`` would.
    """
    from medtune.data.packing import pack
    from medtune.data.prepare import prepare
    from medtune.data.tokenizer import load as load_tokenizer

    color = sys.stdout.isatty() if color is None else color
    provenance: dict[str, str] = {}
    default_model = config.RECIPES_ROOT / "models" / "tiny-llama.yaml"
    recipe = config.load(recipe_path, list(overrides), defaults=[default_model], provenance=provenance)
    try:  # a data recipe (no model section) borrows the tiny model's tokenizer, as `prepare` does
        config.load(recipe_path, list(overrides), check_files=False)
        names_model = True
    except config.RecipeError:
        names_model = False

    out(f"recipe {recipe_path} (resolved; each key with the file that set it)")
    rows = settings(recipe, provenance)
    width = min(60, max(len(f"{k} = {_show(v)}") for k, v, _ in rows))
    for key, value, where in rows:
        out(f"  {f'{key} = {_show(value)}':<{width}}  {_short_path(where)}")

    prepared = prepare(recipe, recipe_path, log=lambda _: None, model_context=names_model)
    tok = load_tokenizer(recipe)
    ds = prepared.dataset
    sources, lengths = ds["source"], ds["length"]
    by_source: dict[str, list[int]] = {}
    for i, name in enumerate(sources):
        by_source.setdefault(name, []).append(i)

    mark = "bold green" if color else f"{OPEN}brackets{CLOSE}"
    out(f"\nsamples ({n} per source; the tokens that carry the loss in {mark})")
    for name, rows_of in by_source.items():
        for i in rows_of[:n]:
            row = ds[i]
            out(f"--- {name} #{i} ({row['length']} tokens, {row['n_labels']} with loss, task {row['task']})")
            out(marked(row["input_ids"], row["labels"], tok, color))

    stats = prepared.stats
    out(f"\n{'source':<24}{'records':>9}{'malformed':>10}{'dups':>6}{'held out':>9}{'samples':>9}"
        f"{'min len':>9}{'mean len':>9}{'max len':>9}")
    for name, st in stats["sources"].items():
        ls = [lengths[i] for i in by_source.get(name, [])]
        span = (f"{min(ls):>9}{sum(ls) / len(ls):>9.1f}{max(ls):>9}" if ls else f"{'-':>9}" * 3)
        out(f"{name[:23]:<24}{st['records']:>9}{st['malformed']:>10}{st['duplicates']:>6}"
            f"{st.get('validation', 0):>9}{st['samples']:>9}{span}")
    total = sum(lengths)
    out(f"{'all':<24}{'':>34}{len(lengths):>9}{min(lengths):>9}{total / len(lengths):>9.1f}{max(lengths):>9}")
    if "validation" in stats:
        v = stats["validation"]
        out(f"validation (data.validation): {v['samples']} samples, {v['tokens']} tokens "
            f"({v['label_tokens']} with loss)")

    d = recipe.data
    packs = pack(lengths, d.max_tokens)
    world = recipe.launch.procs * recipe.launch.nodes
    per_step = world * recipe.train.grad_accum
    out(f"\npacking: {len(lengths)} samples, {total} tokens ({stats['label_tokens']} with loss) into "
        f"{len(packs)} packs of {d.max_tokens}: fill {total / (len(packs) * d.max_tokens):.1%}; "
        f"{math.ceil(len(packs) / per_step)} optimizer steps per epoch at {world} rank(s) x "
        f"{recipe.train.grad_accum} accumulation")
    out(f"data cache: {prepared.path} ({'found' if prepared.cache_hit else 'built'}); nothing launched")


def _show(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 70 else text[:67] + "..."


def _short_path(where: str) -> str:
    """A file relative to the working directory when it is under it."""
    try:
        return str(Path(where).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return where
