"""Conversations and prompt/completion pairs, read through `datasets` (`medtune.data.formats.tables`).

| format              | a row                                                                  |
|---------------------|------------------------------------------------------------------------|
| ``messages``        | ``{"messages": [{"role": "system"/"user"/"assistant", "content": ...}]}`` (OpenAI) |
| ``sharegpt``        | ``{"conversations": [{"from": "system"/"human"/"gpt", "value": ...}]}`` |
| ``prompt_completion``| ``{"prompt": str, "completion": str}`` (TRL's standard form), or both lists of messages (TRL's conversational form) |

Each may also carry ``task`` and ``source`` columns; a source's ``columns:``
maps these names to the table's own (``columns: {messages: dialog}``). A row
that cannot be trained on is a `Malformed` naming its file and row, with the
reason: a missing or non-list conversation, an empty one, a turn that is not
``{role, content}`` strings, an unknown role (ShareGPT dumps carry
``function_call``/``observation`` turns, hiyouga/LLaMA-Factory#4305's shape),
a system turn after the first, or no assistant turn with text (nothing to train).
Turns after the last assistant turn are dropped when rendered (nothing to learn there).
"""
from __future__ import annotations

from typing import Any, Iterator

import medtune.data.formats.tables as tables
from medtune.data.formats.records import Malformed, Record

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user",
                  "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant"}
"""ShareGPT's ``from`` values (FastChat's and LLaMA-Factory's spellings) -> OpenAI roles."""

_TYPES = {dict: "object", list: "list", str: "string", int: "int", float: "float", bool: "bool",
          type(None): "null"}


def _kind(value: Any) -> str:
    return _TYPES.get(type(value), type(value).__name__)


def conversation(turns: Any, field: str, role_key: str = "role", content_key: str = "content",
                 roles: dict[str, str] | None = None) -> tuple[tuple[str, str], ...] | str:
    """The ``(role, content)`` turns of one row's conversation, or the reason it is unusable.

    `roles` maps the file's role names to ``system``/``user``/``assistant``
    (identity when ``None``). ``conversation([], "messages") == "empty conversation in 'messages'"``.
    """
    roles = roles or {r: r for r in ROLES}
    if not isinstance(turns, list):
        return f"'{field}' must be a list of turns, not {_kind(turns)}"
    if not turns:
        return f"empty conversation in '{field}'"
    out = []
    for n, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            return f"turn {n} of '{field}' must be an object, not {_kind(turn)}"
        role, content = turn.get(role_key), turn.get(content_key)
        if not isinstance(role, str):
            return f"turn {n} of '{field}': '{role_key}' must be a string, not {_kind(role)}"
        if role not in roles:
            return (f"turn {n} of '{field}': unknown {role_key} '{role}' "
                    f"(known: {', '.join(roles)})")
        if not isinstance(content, str):
            return f"turn {n} of '{field}': '{content_key}' must be a string, not {_kind(content)}"
        if roles[role] == "system" and n > 1:
            return f"turn {n} of '{field}': a system turn may only come first"
        out.append((roles[role], content))
    if not any(r == "assistant" and c.strip() for r, c in out):
        return f"no assistant turn with text in '{field}' (nothing to train on)"
    try:
        "".join(c for _, c in out).encode("utf-8")
    except UnicodeEncodeError as err:
        return f"'{field}' holds a lone UTF-16 surrogate (U+{ord(err.object[err.start]):04X}), which is not text"
    return tuple(out)


def from_turns(turns: tuple[tuple[str, str], ...], row: dict) -> Record:
    """A conversation record; `instruction`/`output` are its first user and last assistant turns."""
    first_user = next((c for r, c in turns if r == "user"), "")
    last = next(c for r, c in reversed(turns) if r == "assistant" and c.strip())
    source = row.get("source")
    return Record(first_user, "", last, str(row.get("task") or "chat"),
                  source=str(source) if source is not None else None, messages=turns)


def _read(field: str, path: str, split: str, revision: str | None, columns: dict | None,
          **how) -> Iterator[Record | Malformed]:
    for where, i, row in tables.rows(path, split, revision, columns, need=(field,)):
        turns = conversation(row.get(field), field, **how)
        yield Malformed(where, i, turns, "row") if isinstance(turns, str) else from_turns(turns, row)


def read_messages(path: str, split: str = "train", revision: str | None = None,
                  columns: dict[str, str] | None = None) -> Iterator[Record | Malformed]:
    """OpenAI ``messages`` rows -> conversation records (see the module's table)."""
    return _read("messages", path, split, revision, columns)


def read_sharegpt(path: str, split: str = "train", revision: str | None = None,
                  columns: dict[str, str] | None = None) -> Iterator[Record | Malformed]:
    """ShareGPT ``conversations`` rows (``from``/``value``) -> conversation records."""
    return _read("conversations", path, split, revision, columns, role_key="from", content_key="value",
                 roles=SHAREGPT_ROLES)


def read_prompt_completion(path: str, split: str = "train", revision: str | None = None,
                           columns: dict[str, str] | None = None) -> Iterator[Record | Malformed]:
    """``{prompt, completion}`` rows: strings become a one-turn record (the prompt as its
    instruction), lists of messages a conversation (the prompt's turns, then the completion's)."""
    for where, i, row in tables.rows(path, split, revision, columns, need=("prompt", "completion")):
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, list) and isinstance(completion, list):
            turns = conversation(prompt + completion, "prompt+completion")
            yield Malformed(where, i, turns, "row") if isinstance(turns, str) else from_turns(turns, row)
            continue
        reason = next((f"'{k}' must be a string, not {_kind(v)}" for k, v in
                       (("prompt", prompt), ("completion", completion)) if not isinstance(v, str)), None)
        if reason is None and not completion.strip():
            reason = "empty completion"
        if reason is not None:
            yield Malformed(where, i, reason, "row")
            continue
        source = row.get("source")
        yield Record(prompt, "", completion, str(row.get("task") or "generic"),
                     source=str(source) if source is not None else None)
