"""Sources -> one deterministic mixture of instruction samples.

For each source, in recipe order:

1. read its records; malformed lines are counted and the first few kept
   for the report (``data.strict`` makes them an error);
2. number the good records 0, 1, 2, ... (a malformed line takes no number,
   so it never shifts the others);
3. drop exact duplicates of a record already taken from any source
   (``data.dedup``), counted against the source that repeats it;
4. apply ``weight`` (whole copies plus a seeded fraction) and ``cap`` (a
   seeded choice), keeping reading order;
5. give each sample an instruction drawn from its pool by (mixture seed,
   source name, record number, copy number).

Worked example: a source ``ncbi`` with 4 good records (one duplicate of an
earlier source), ``weight: 1.5``, mixture seed 0::

    read        r0 r1 r2 r3            (line 7 malformed: counted, no number)
    dedup       r0 r1    r3            duplicates 1
    weight 1.5  r0 r1 r3 | r1          whole copy + seeded half (copy 1 of r1)
    instruct    pick("ner-disease", 0, "ncbi", 0, copy 0), ... (1, copy 1)

Every step depends only on the recipe and the sources' bytes, never on the
order in which anything is processed.
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from medtune.config import DataConfig, SourceConfig
from medtune.errors import RecipeError
from medtune.data import templates
from medtune.data.formats import READERS, Malformed, Record, SourceError

SHOWN_PROBLEMS = 5  # malformed lines quoted per source; the rest are counted


@dataclass
class SourceStats:
    format: str = ""
    records: int = 0
    """Good records read."""
    malformed: int = 0
    duplicates: int = 0
    samples: int = 0
    """Samples in the mixture after weight, cap and overlong drops."""
    tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    origins: dict[str, int] = field(default_factory=dict)
    """Samples per ``source`` field value (mixed sets), when records have one."""
    first_problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    source: str
    record: Record


def source_name(src: SourceConfig) -> str:
    return src.name or Path(src.path).stem


def build(data: DataConfig, recipe_file: str = "recipe",
          progress: bool = True) -> tuple[list[Sample], dict[str, SourceStats]]:
    """The mixture's samples, in recipe order, and per-source counts."""
    samples: list[Sample] = []
    stats: dict[str, SourceStats] = {}
    seen: set[tuple[str, str, str]] = set()
    for i, src in enumerate(data.sources):
        name = source_name(src)
        st = stats.setdefault(name, SourceStats(format=src.format))
        kept = _read(i, src, name, st, data, recipe_file, seen, progress)
        for index, copy in _select(len(kept), src, name, data.mixture_seed):
            number, rec = kept[index]
            samples.append(Sample(name, _instructed(rec, src, name, number, copy, data.mixture_seed)))
            st.samples += 1
            if rec.source is not None:
                st.origins[rec.source] = st.origins.get(rec.source, 0) + 1
    return samples, stats


def _read(i: int, src: SourceConfig, name: str, st: SourceStats, data: DataConfig,
          recipe_file: str, seen: set, progress: bool) -> list[tuple[int, Record]]:
    """The source's good, non-duplicate records with their record numbers."""
    from tqdm import tqdm

    reader = READERS[src.format]
    options = {k: getattr(src, k) for k in reader.options}
    kept: list[tuple[int, Record]] = []
    excluded = 0
    try:
        items = tqdm(reader.read(src.path, **options), desc=f"read {name}", unit=" rec",
                     disable=None if progress else True, leave=False)
        for item in items:
            if isinstance(item, Malformed):
                st.malformed += 1
                if len(st.first_problems) < SHOWN_PROBLEMS:
                    st.first_problems.append(str(item))
                continue
            if src.include is not None and item.source not in src.include:
                excluded += 1
                continue
            if src.task is not None:
                item = dataclasses.replace(item, task=src.task)
            number = st.records
            st.records += 1
            if data.dedup:
                key = (item.instruction, item.input, item.output, item.messages)
                if key in seen:
                    st.duplicates += 1
                    continue
                seen.add(key)
            kept.append((number, item))
    except SourceError as err:
        raise RecipeError([f"{recipe_file}: data.sources.{i} ({name}): {err}"]) from None
    if data.strict and st.malformed:
        raise RecipeError([strict_problem(recipe_file, name, st.malformed, st.first_problems)])
    if not st.records:
        raise RecipeError([f"{recipe_file}: data.sources.{i} ({name}): {src.path}: no usable samples "
                           + _why_empty(st, excluded, src.include)])
    return kept


def strict_problem(recipe_file: str, name: str, malformed: int, first: list[str]) -> str:
    """The one line ``data.strict: true`` stops with: the count and the first problems, e.g.
    ``r.yaml: data.strict = true: 2 malformed record(s) in source 'gad': a.tsv:3: empty text;
    a.tsv:9: unknown label '2'; fix them, or set data.strict: false to skip and count them``.
    """
    more = malformed - len(first)
    return (f"{recipe_file}: data.strict = true: {malformed} malformed record(s) in source '{name}': "
            + "; ".join(first) + (f" (and {more} more)" if more > 0 else "")
            + "; fix them, or set data.strict: false to skip and count them")


def _why_empty(st: SourceStats, excluded: int, include: list[str] | None) -> str:
    """Why a source gave no record: its malformed lines (the first ones quoted), `include`, or nothing there."""
    if st.malformed:
        more = st.malformed - len(st.first_problems)
        return (f"(malformed: {st.malformed}); first: " + "; ".join(st.first_problems)
                + (f" (and {more} more)" if more > 0 else ""))
    if excluded:
        return f"({excluded} records, none whose source is in include: {', '.join(include or [])})"
    return "(no records in it)"


def _select(n: int, src: SourceConfig, name: str, seed: int) -> list[tuple[int, int]]:
    """(record position, copy) pairs that `weight` and `cap` keep, in order.

    >>> _select(4, SourceConfig(path="x", weight=1.5), "x", 0)  # doctest: +SKIP
    [(0, 0), (1, 0), (2, 0), (3, 0), (1, 1), (3, 1)]
    """
    whole = math.floor(src.weight)
    chosen = [(i, c) for c in range(whole) for i in range(n)]
    extra = round((src.weight - whole) * n)
    if extra:
        rng = random.Random(f"{seed}\x1f{name}\x1fweight")
        chosen += [(i, whole) for i in sorted(rng.sample(range(n), extra))]
    if src.cap is not None and len(chosen) > src.cap:
        rng = random.Random(f"{seed}\x1f{name}\x1fcap")
        keep = sorted(rng.sample(range(len(chosen)), src.cap))
        chosen = [chosen[j] for j in keep]
    return chosen


def _instructed(rec: Record, src: SourceConfig, name: str, number: int, copy: int,
                seed: int) -> Record:
    """`rec` with its drawn instruction: from the source's pool when it names
    one, else from its task's pool when it has no instruction of its own."""
    pool = src.instructions or (rec.task if not rec.instruction and rec.task in templates.POOLS else None)
    if pool is None:
        return rec
    return dataclasses.replace(rec, instruction=templates.pick_instruction(pool, seed, name, number, copy))
