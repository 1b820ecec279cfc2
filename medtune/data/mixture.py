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
5. give each sample an instruction drawn from its pool (or the source's own
   list or file, `medtune.data.instructions`) by (mixture seed, source name,
   record number, copy number); ``{types}`` names the source's entity types.

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
from medtune.base.errors import RecipeError
from medtune.data import instructions, templates
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
    validation: int = 0
    """Records held out for validation, or removed as equal to a validation record."""
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
    """The mixture's training samples, in recipe order, and per-source counts."""
    return split(data, recipe_file, progress).train


@dataclass(frozen=True)
class Split:
    """Training and validation samples with their per-source counts."""
    train: tuple[list[Sample], dict[str, SourceStats]]
    validation: tuple[list[Sample], dict[str, SourceStats]] | None
    overlap: int = 0
    """Training records removed because their text equals a validation record's."""


def content_key(rec: Record) -> tuple:
    """What makes two records the same text (``dedup``, validation overlap): instruction as
    read, input, output and, for a conversation, its ``(role, content)`` turns."""
    return (rec.instruction, rec.input, rec.output, rec.messages)


def split(data: DataConfig, recipe_file: str = "recipe", progress: bool = True) -> Split:
    """Training samples and, with ``data.validation``, validation samples that never share a text.

    Held out per source (``fraction``/``samples``): a seeded choice of the
    source's good records (after ``dedup``), keyed by (validation seed,
    source name), taken before ``weight``/``cap``; the held-out records keep
    their record numbers, so they draw the instruction they would have drawn
    in training. Explicit ``sources`` are read like training sources (their
    own ``dedup`` among themselves, ``cap`` applied). Either way a training
    record whose `content_key` equals a validation record's is removed from
    training and counted in its source's ``validation`` field (removed, not
    refused: a devel split that repeats a few training sentences is common in
    the BioNLP corpora). Without ``data.validation`` the training samples are
    exactly those of a recipe without the key.
    """
    v = data.validation
    seen: set[tuple] = set()
    reads = []
    stats: dict[str, SourceStats] = {}
    for i, src in enumerate(data.sources):
        name = source_name(src)
        st = stats.setdefault(name, SourceStats(format=src.format))
        reads.append((src, name, st, _read(i, src, name, st, data, recipe_file, seen, progress)))
    drawn = _drawing(data.sources, reads, recipe_file, "data.sources")
    if v is None:
        return Split(_mix(reads, data.mixture_seed, stats, drawn), None)
    held = []  # (src, name, stats, records as read) of the validation set
    if v.sources is not None:
        vdata = dataclasses.replace(data, sources=v.sources, validation=None)
        vseen: set[tuple] = set()
        for i, src in enumerate(v.sources):
            name = source_name(src)
            st = SourceStats(format=src.format)
            held.append((src, name, st, _read(i, src, name, st, vdata, recipe_file, vseen, progress,
                                              "data.validation.sources")))
        held_drawn = _drawing(v.sources, held, recipe_file, "data.validation.sources")
    else:
        held_drawn = drawn  # held-out records draw what they would have drawn in training
        for k, (src, name, st, kept) in enumerate(reads):
            out = set(_held_out(len(kept), v.fraction, v.samples, v.seed, name))
            held.append((src, name, SourceStats(format=src.format, records=len(out)),
                         [r for j, r in enumerate(kept) if j in out]))
            reads[k] = (src, name, st, [r for j, r in enumerate(kept) if j not in out])
            st.validation += len(out)
    keys = {content_key(r) for _, _, _, kept in held for _, r in kept}
    overlap = 0
    for k, (src, name, st, kept) in enumerate(reads):
        clean = [(n, r) for n, r in kept if content_key(r) not in keys]
        st.validation += len(kept) - len(clean)
        overlap += len(kept) - len(clean)
        reads[k] = (src, name, st, clean)
    whole = v.sources is None  # a held-out record counts once; explicit sources keep weight and cap
    return Split(_mix(reads, data.mixture_seed, stats, drawn),
                 _mix(held, data.mixture_seed, {}, held_drawn, whole), overlap)


def _drawing(sources: list[SourceConfig], reads, recipe_file: str,
             key: str) -> list[tuple[tuple[str, ...] | None, list[str]]]:
    """Per source of `reads` (in order): its own instruction choices (or None) and the entity
    types of its typed NER records (read before any hold-out, so training and validation fill
    ``{types}`` alike)."""
    out = []
    for i, (src, (_, name, _, kept)) in enumerate(zip(sources, reads)):
        own = _own_choices(i, src, name, recipe_file, key)
        out.append((own, instructions.entity_types(rec.gold for _, rec in kept if rec.task == "ner-typed")))
    return out


def _mix(reads, seed: int, stats: dict[str, SourceStats], drawn,
         whole: bool = False) -> tuple[list[Sample], dict[str, SourceStats]]:
    """Samples of `reads` ``(src, name, stats, kept records)``: weight, cap (unless `whole`),
    instructions drawn from `drawn` (see `_drawing`, same order)."""
    samples: list[Sample] = []
    for (src, name, st, kept), (own, types) in zip(reads, drawn):
        stats.setdefault(name, st)
        chosen = [(j, 0) for j in range(len(kept))] if whole else _select(len(kept), src, name, seed)
        for index, copy in chosen:
            number, rec = kept[index]
            samples.append(Sample(name, _instructed(rec, own, types, name, number, copy, seed)))
            st.samples += 1
            if rec.source is not None:
                st.origins[rec.source] = st.origins.get(rec.source, 0) + 1
    return samples, stats


def _held_out(n: int, fraction: float | None, count: int | None, seed: int, name: str) -> list[int]:
    """Positions of the `n` records of source `name` held out for validation (a seeded choice).

    ``fraction``: ``round(fraction * n)``, at least 1; ``count``: that many; either way at most
    ``n - 1``, so every source keeps a record to train on (none is held out of a 1-record source).
    """
    k = max(1, round(fraction * n)) if fraction is not None else count or 0
    k = min(k, n - 1)
    if k <= 0:
        return []
    return sorted(random.Random(f"{seed}\x1f{name}\x1fvalidation").sample(range(n), k))


def _read(i: int, src: SourceConfig, name: str, st: SourceStats, data: DataConfig,
          recipe_file: str, seen: set, progress: bool, key: str = "data.sources") -> list[tuple[int, Record]]:
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
                text = content_key(item)
                if text in seen:
                    st.duplicates += 1
                    continue
                seen.add(text)
            kept.append((number, item))
    except SourceError as err:
        raise RecipeError([f"{recipe_file}: {key}.{i} ({name}): {err}"]) from None
    if data.strict and st.malformed:
        raise RecipeError([strict_problem(recipe_file, name, st.malformed, st.first_problems)])
    if not st.records:
        raise RecipeError([f"{recipe_file}: {key}.{i} ({name}): {src.path}: no usable samples "
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


def _own_choices(i: int, src: SourceConfig, name: str, recipe_file: str,
                 key: str = "data.sources") -> tuple[str, ...] | None:
    """The instructions the source's ``instructions:`` names, or None (records keep or draw their own)."""
    if src.instructions is None:
        return None
    try:
        return instructions.choices(src.instructions)
    except ValueError as err:
        raise RecipeError([f"{recipe_file}: {key}.{i}.instructions ({name}): {err}"]) from None


def _instructed(rec: Record, own: tuple[str, ...] | None, types: list[str], name: str, number: int,
                copy: int, seed: int) -> Record:
    """`rec` with its drawn instruction: from the source's own choices when it names
    some, else from its task's pool when it has no instruction of its own;
    ``{types}`` filled with the source's entity `types`."""
    choices = own
    if choices is None and not rec.instruction and rec.task in templates.POOLS:
        choices = templates.POOLS[rec.task]
    if choices is None:
        return rec
    text = templates.draw(choices, seed, name, number, copy)
    return dataclasses.replace(rec, instruction=instructions.fill(text, types))
