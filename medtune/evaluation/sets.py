"""Evaluation recipes: which held-out sets to generate for, and how.

An evaluation recipe (``recipes/eval/*.yaml``) is separate from a training
recipe: it names held-out splits, read by the same readers as training
(`medtune.data.formats.READERS`), and generation settings::

    sets:
      - {name: ncbi-disease-test, path: ../../../shared/data/ncbi_disease, format: conll,
         split: test, instructions: ner-disease, paper: ncbi-disease, limit: 200}
    generation: {max_new_tokens: 512, num_beams: 1, batch_size: 8}
    template: paper

Relative paths are taken relative to the file that sets them. An evaluation
recipe loads like a training recipe (`medtune.config.compose`): ``base:``
files (beside it, then under ``recipes/``), dotted overrides (``sets.0.limit=50``,
``generation.num_beams=4``) and errors naming the file that set the key. Each sample draws its
instruction from its pool (or the set's own list or file) exactly as training does (`templates.pick_instruction`
with ``mixture_seed``, the set name and the record number), and the prompt is
rendered by `templates.render`, so generation sees the training prompt.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from medtune import config
from medtune.base.errors import RecipeError
from medtune.data.instructions import choices, is_file
from medtune.config import read_yaml, section
from medtune.data import tasks, templates
from medtune.data.formats import READERS, Malformed, Record, SourceError


@section
class EvalSet:
    path: str
    """File or directory of the held-out split, relative to the recipe file."""
    format: str = "conll"
    """Reader: a key of ``medtune.data.formats.READERS``."""
    name: str | None = None
    """Name in the results; default: the path's stem plus the split."""
    split: str = "test"
    """Split the reader picks (``devel``, ``test``, ...)."""
    tags: Literal["untyped", "typed"] = "untyped"
    """``conll`` only: ``untyped`` B/I/O or ``typed`` B-TYPE/I-TYPE (i2b2-2012)."""
    instructions: str | list[str] | None = None
    """A pool name, a list of instructions or a text file (relative to the recipe), as a training
    source's ``instructions`` (`medtune.data.instructions`); default: the task's pool."""
    task: str | None = None
    """Task of every record (a key of ``medtune.data.tasks.TASKS``); default: the reader's."""
    limit: int | None = Field(default=None, ge=1)
    """Score only the first N records of the split (a quick slice)."""
    paper: str | None = None
    """Key of ``medtune/evaluation/paper_results.yaml`` whose reported figures sit beside ours."""


@section
class GenerationConfig:
    max_new_tokens: int = Field(default=512, ge=1)
    """Most tokens generated per sample (NER answers need about 4 per input token)."""
    num_beams: int = Field(default=1, ge=1)
    """1: greedy decoding (the default); more: beam search."""
    batch_size: int = Field(default=8, ge=1)
    """Prompts per generate call, left-padded."""


@section
class EvalRecipe:
    sets: list[EvalSet] = Field(min_length=1)
    """Held-out sets to evaluate."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    template: Literal["paper", "chat"] = "paper"
    """Prompt format; must be the one the model was trained with."""
    mixture_seed: int = 0
    """Seed of the instruction draw (training's ``data.mixture_seed``)."""


def set_name(s: EvalSet) -> str:
    return s.name or f"{Path(s.path).stem}-{s.split}"


def load(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> EvalRecipe:
    """Read, compose and validate an evaluation recipe; `RecipeError` lists every problem.

    `overrides` are ``dotted.key=value`` items applied after the file and its
    bases (`medtune.config.apply_overrides`). Each problem names the file (or
    the command line) that set the key, the key and the value.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError([f"{path}: no such evaluation recipe (see recipes/eval/)"])
    tree, origin = config.compose(path, resolve_paths=_resolve_paths, noun="evaluation recipe")
    config.apply_overrides(tree, origin, overrides)
    recipe = config.build(EvalRecipe, tree, origin, str(path))
    problems = [f"{config.where(key, origin, str(path))}: {key}{msg}" for key, msg in _checks(recipe)]
    if problems:
        raise RecipeError(problems)
    return recipe


def _resolve_paths(raw: dict, here: Path) -> None:
    """Each set's relative ``path`` and instruction file (``$VARS`` and ``~`` expanded) against
    the folder of its file."""
    sets = raw.get("sets")
    for s in sets if isinstance(sets, list) else []:
        if isinstance(s, dict) and isinstance(s.get("path"), str):
            p = Path(os.path.expandvars(s["path"])).expanduser()
            s["path"] = str(p if p.is_absolute() else (here / p).resolve())
        spec = s.get("instructions") if isinstance(s, dict) else None
        if isinstance(spec, str) and is_file(spec):  # a text file beside the recipe, not a pool name
            p = Path(os.path.expandvars(spec)).expanduser()
            s["instructions"] = str(p if p.is_absolute() else (here / p).resolve())


def _checks(r: EvalRecipe) -> list[tuple[str, str]]:
    """(dotted key, the rest of the line after it) for each rule a set breaks."""
    problems = []
    names = [set_name(s) for s in r.sets]
    for i, s in enumerate(r.sets):
        key = f"sets.{i}"
        if s.format not in READERS:
            problems.append((f"{key}.format", f" = {s.format!r}: unknown reader; use one of {', '.join(READERS)}"))
        if s.instructions is not None:
            try:
                choices(s.instructions)
            except ValueError as err:
                problems.append((f"{key}.instructions", f": {err}"))
        if s.task is not None and s.task not in tasks.TASKS:
            problems.append((f"{key}.task", f" = {s.task!r}: not a scored task; use one of "
                                            f"{', '.join(tasks.TASKS)}"))
        if names.count(names[i]) > 1:
            problems.append((f"{key}.name", f" = {names[i]!r}: two sets share this name; give each a `name:`"))
    return problems


def paper_results() -> dict:
    """The paper's reported figures (``paper_results.yaml``), by set key."""
    data = read_yaml(Path(__file__).parent / "paper_results.yaml")
    return data["results"]


@dataclasses.dataclass(frozen=True)
class Sample:
    set: str
    index: int
    """Record number in the split (malformed lines take none, as in training)."""
    record: Record


def read_set(s: EvalSet, mixture_seed: int = 0, limit: int | None = None) -> tuple[list[Sample], int]:
    """The set's samples with their instructions, and the number of malformed lines skipped."""
    name = set_name(s)
    reader = READERS[s.format]
    options = {k: getattr(s, k) for k in reader.options if hasattr(s, k)}
    limit = min(x for x in (s.limit, limit) if x is not None) if (s.limit or limit) else None
    out: list[Sample] = []
    malformed = 0
    own = choices(s.instructions) if s.instructions is not None else None  # checked by `load`
    try:
        for item in reader.read(s.path, **options):
            if isinstance(item, Malformed):
                malformed += 1
                continue
            if limit is not None and len(out) >= limit:
                break
            rec = item if s.task is None else Record(item.instruction, item.input, item.output,
                                                     s.task, item.gold, item.source)
            pool = own if own is not None else (
                templates.POOLS[rec.task] if not rec.instruction and rec.task in templates.POOLS else None)
            if pool is not None:
                rec = Record(templates.draw(pool, mixture_seed, name, len(out)), rec.input,
                             rec.output, rec.task, rec.gold, rec.source)
            out.append(Sample(name, len(out), rec))
    except SourceError as err:
        raise RecipeError([f"sets ({name}): {err}"]) from None
    from medtune.data.instructions import TYPES, entity_types, fill

    if any(TYPES in smp.record.instruction for smp in out):  # typed NER: name the set's types, as training does
        types = entity_types(smp.record.gold for smp in out if smp.record.task == "ner-typed")
        out = [dataclasses.replace(smp, record=dataclasses.replace(smp.record, instruction=fill(
            smp.record.instruction, types))) for smp in out]
    return out, malformed

