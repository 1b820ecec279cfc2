"""The data part's recipe checks, registered with `medtune.config` (which knows no reader).

`medtune.config.validate` runs them with its other cross-field rules, so a bad
source is one line naming the file and key before any work, like any other
recipe error.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from medtune.config import Recipe, SourceConfig, register_check
from medtune.data.formats import FIELDS, READERS, SETTINGS, SourceError, source_files
from medtune.data import instructions


@register_check
def source_problems(recipe: Recipe, check_files: bool = True) -> list[tuple[str, str]]:
    """Every source's reader, files, pool and reader-specific settings, before any work.

    ``(dotted key, message)`` per problem, e.g. ``("data.sources.0.format",
    "unknown reader 'jsnol': did you mean 'jsonl'? known: ...")``; `check_files`
    False skips what reads the file system (paths, unset ``$VARIABLES``).
    """
    d = recipe.data
    out = _problems("data.sources", d.sources, check_files)
    if d.validation is not None and d.validation.sources:
        out += _problems("data.validation.sources", d.validation.sources, check_files)
    if d.chat_template is not None:
        if d.template != "chat":
            out.append(("data.chat_template", f"applies to data.template: chat only, not {d.template}"))
        elif check_files and not Path(d.chat_template).is_file():
            out.append(("data.chat_template", f"{d.chat_template} does not exist (a Jinja chat template file)"))
    return out


def _problems(prefix: str, sources: list[SourceConfig], check_files: bool) -> list[tuple[str, str]]:
    out = []
    names: dict[str, int] = {}
    defaults = SourceConfig(path="-")
    for i, src in enumerate(sources):
        key = f"{prefix}.{i}"
        unset = re.search(r"\$\{?(\w+)", src.path)
        if unset and check_files:
            out.append((f"{key}.path", f"{src.path[unset.start():]}: ${unset.group(1)} is not set "
                                       f"(export {unset.group(1)}=/path/to/your/corpora)"))
            continue
        if src.format not in READERS:
            near = difflib.get_close_matches(src.format, READERS, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            out.append((f"{key}.format",
                        f"unknown reader '{src.format}': {hint}known: {', '.join(sorted(READERS))}"))
            continue
        try:
            if check_files and (READERS[src.format].local or Path(src.path).is_absolute()):
                source_files(src.format, src.path, src.split)
        except SourceError as err:
            out.append((f"{key}.path", str(err)))
        for setting, formats in SETTINGS.items():
            if getattr(src, setting) != getattr(defaults, setting) and src.format not in formats:
                out.append((f"{key}.{setting}", f"applies to format {' or '.join(formats)} only, "
                                                f"not {src.format}"))
        for field in src.columns or {}:
            known = FIELDS.get(src.format, ())
            if known and field not in known:
                out.append((f"{key}.columns.{field}", f"format {src.format} has no field '{field}' "
                                                      f"(fields: {', '.join(known)})"))
        if src.instruction is not None and "instruction" in (src.columns or {}):
            out.append((f"{key}.instruction", "give either a fixed instruction or columns.instruction, "
                                              "not both"))
        if src.instructions is not None:
            spec = src.instructions
            if check_files or not isinstance(spec, str) or not instructions.is_file(spec):
                try:
                    instructions.choices(spec)
                except ValueError as err:
                    out.append((f"{key}.instructions", str(err)))
        name = src.name or Path(src.path).stem
        if name in names:
            out.append((f"{key}.name", f"two sources are named '{name}' (sources {names[name]} and "
                                       f"{i}): give each a distinct name"))
        names.setdefault(name, i)
    return out
