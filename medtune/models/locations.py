"""Where a recipe's model and tokenizer come from, checked before any rank starts.

A local directory is checked by `medtune.config` (pure Python). A hub id is
checked here, once, in the launching process: its files are looked up in the
Hugging Face cache (`huggingface_hub.try_to_load_from_cache`, no network);
if they are not all there, offline mode (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)
is refused at once, and otherwise the hub is asked once with a short timeout
(`huggingface_hub.HfApi.model_info`). Each failure is one line that says
what to download and where, instead of transformers' traceback on every
rank after its retries (about a minute).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from medtune.config import Recipe
from medtune.config import looks_local as is_local  # one rule for config's checks and these

HUB_TIMEOUT_S = 5.0
"""Seconds the one question to the hub may take (connect and read)."""

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    """Offline mode as huggingface_hub and transformers read it, from the environment now."""
    return _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")


def hub_cache() -> Path:
    """The hub cache the ranks will read, from the environment now, as ``huggingface_hub.constants``
    reads it at import: ``HF_HUB_CACHE``, else the legacy ``HUGGINGFACE_HUB_CACHE`` (still
    honoured there), else ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``
    (``~/.cache/huggingface/hub``); ``~`` and ``$VAR`` expanded."""
    def expand(path: str) -> str:
        return os.path.expandvars(os.path.expanduser(path))

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(expand(os.environ[name]))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(expand(home)) / "hub"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _cached(repo: str, filename: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def missing_from_cache(repo: str, revision: str | None, weights: bool, tokenizer: bool) -> list[str]:
    """The files of hub `repo` that loading needs and the cache lacks (``[]``: loads offline).

    `weights`: ``config.json`` and the weights (every shard an index names);
    `tokenizer`: one of ``tokenizer_config.json``, ``tokenizer.json``, ``tokenizer.model``.
    """
    missing = []
    if weights:
        if _cached(repo, "config.json", revision) is None:
            missing.append("config.json")
        found = {f: _cached(repo, f, revision) for f in _WEIGHT_FILES}
        if not any(found.values()):
            missing.append("the weights (model.safetensors or pytorch_model.bin)")
        for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if found[name] is not None:
                try:
                    shards = sorted(set(json.loads(found[name].read_text())["weight_map"].values()))
                except (OSError, ValueError, KeyError, AttributeError):
                    shards = []
                missing += [s for s in shards if _cached(repo, s, revision) is None]
    if tokenizer and not any(_cached(repo, f, revision) for f in _TOKENIZER_FILES):
        missing.append("the tokenizer (tokenizer_config.json)")
    return missing


def _download_hint(repo: str, key: str) -> str:
    leaf = repo.rsplit("/", 1)[-1]
    return (f"download it where the hub is reachable: `hf download {repo} --local-dir DIR/{leaf}` "
            f"and set {key}: DIR/{leaf} (or `hf download {repo}` into the cache {hub_cache()})")


def check_hub(repo: str, revision: str | None, key: str, weights: bool, tokenizer: bool) -> str | None:
    """One line saying why hub id `repo` cannot be loaded here, or ``None`` when it can.

    No network when the cache holds every needed file; in offline mode a
    missing file is refused without asking; otherwise one `model_info` call
    with `HUB_TIMEOUT_S`. `key` is the recipe key named in the line.
    """
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    at = f"{repo}@{revision}" if revision else repo
    try:
        missing = missing_from_cache(repo, revision, weights, tokenizer)
    except HFValidationError:
        return (f"{repo!r} is neither a directory nor a hub id (owner/name); a local directory "
                "must exist (write ./ in front of a relative path)")
    if not missing:
        return None
    what = f"{at} is not in the Hugging Face cache {hub_cache()}"
    if len(missing) < 3 and "config.json" not in missing:  # partly there: say what is not
        what += f" (missing {', '.join(missing)})"
    if offline():
        flag = "HF_HUB_OFFLINE" if _truthy("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        return f"{what} and {flag} is set; {_download_hint(repo, key)}"
    from huggingface_hub import HfApi

    try:
        HfApi(endpoint=endpoint()).model_info(repo, revision=revision, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return (f"{repo} is gated on {endpoint()}: accept its licence at {endpoint()}/{repo}, then "
                "`hf auth login` (or set HF_TOKEN) on every node")
    except RepositoryNotFoundError:
        return (f"{repo}: no such model on {endpoint()} (check the id, owner/name; a private one needs "
                "`hf auth login` or HF_TOKEN; a local directory must exist)")
    except RevisionNotFoundError:
        return f"{repo}: no revision {revision!r} on {endpoint()} (model.revision)"
    except Exception as err:  # noqa: BLE001 - network failures of every kind end the same way
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        return f"{what} and the hub {endpoint()} cannot be reached ({reason}); {_download_hint(repo, key)}"
    return None


def problems(recipe: Recipe, weights: bool = True) -> list[tuple[str, str]]:
    """(recipe key, one-line message) for each hub model or tokenizer that cannot be loaded.

    `weights=False` checks only what tokenizing needs (``medtune prepare``).
    Local directories are `medtune.config`'s to check.
    """
    m = recipe.model
    out = []
    # the tokenizer the ranks load (medtune.data.tokenizer.location), unless medtune trains it
    tok = (m.tokenizer or m.name_or_path) if m.train_tokenizer is None else None
    tok_revision = None if m.tokenizer else m.revision
    together = weights and tok is not None and m.tokenizer is None  # one repo gives both
    if weights and m.name_or_path and not is_local(m.name_or_path):
        msg = check_hub(m.name_or_path, m.revision, "model.name_or_path", True, together)
        if msg:
            out.append(("model.name_or_path", msg))
    if tok and not together and not is_local(tok):
        key = "model.tokenizer" if m.tokenizer else "model.name_or_path"
        msg = check_hub(tok, tok_revision, key, False, True)
        if msg:
            out.append((key, msg))
    return out
