"""Build the training data of a recipe once, cache it, and reuse it.

``prepare(recipe)`` builds the mixture (`medtune.data.mixture`), renders and
tokenizes every sample, and saves the result with `datasets` (Arrow) under a
directory named by a fingerprint of everything that changes the tokens: the
bytes of the files each source reads, every source setting (split, tags,
pool, weight, cap, ...), the mixture seed, dedup, the template,
``max_tokens``/``overlong``, the per-sample limit (``max_tokens`` or the
model's context, if shorter), the data code itself and the tokenizer. A second
call with the same inputs is a cache hit; ``data.strict``, which changes what
is accepted but not the tokens, is checked again on a hit against the
malformed counts the build kept. Every process may call it: a file
lock lets the first one build while the others wait, and the cache appears
by an atomic rename only when complete, so a crash never leaves a half cache.

The cache directory holds::

    arrow/        the dataset: input_ids, labels, length, n_labels, source, task
    validation/   the same columns for ``data.validation`` (only when the recipe has one)
    stats.json    per source, per task, packing fill (written last: marks it complete)
    lengths.png   token-length histogram per task
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medtune.config import DataConfig, Recipe
from medtune.base.errors import RecipeError
from medtune.data import mixture, templates, tokenize
from medtune.data.formats import source_files
from medtune.data.cache import cache_root, hash_path, sources_digest  # noqa: F401 (importable from here)
from medtune.data.mixture import Sample, SourceStats
from medtune.base.fsutil import locked

DATA_VERSION = "2"  # bump when the cached columns or their meaning change
COLUMNS = ("input_ids", "labels", "length", "n_labels", "source", "task")
BATCH = 2048  # records per tokenizer call (the Rust tokenizer spreads a batch over all cores)


@dataclass(frozen=True)
class Prepared:
    dataset: object            # datasets.Dataset with COLUMNS
    path: Path
    fingerprint: str
    stats: dict
    cache_hit: bool
    validation: object = None  # datasets.Dataset with COLUMNS for data.validation, else None


def prepare(recipe: Recipe, recipe_file: str = "recipe", log=print, model_context: bool = True) -> Prepared:
    """Tokenized, cached training data of `recipe` (built on first use).

    No sample is longer than `sample_limit` (``data.max_tokens`` or the
    model's context, if shorter); ``model_context=False`` (a data recipe,
    whose model section only lends a tokenizer) limits samples to
    ``data.max_tokens`` alone. Raises `RecipeError` for bad data (see
    `medtune.data.mixture.build`) and for a prompt with no room for its answer.
    """
    from datasets import load_from_disk

    root = cache_root(recipe)
    limit = (sample_limit(recipe, recipe_file) if model_context
             else SampleLimit(recipe.data.max_tokens, recipe.data.max_tokens, None))
    root.mkdir(parents=True, exist_ok=True)
    samples = _ensure_tokenizer(recipe, recipe_file, root)
    fp = fingerprint(recipe, limit)
    final = root / "data" / fp
    with locked(root / "data" / f"{fp}.lock"):
        hit = (final / "stats.json").is_file()
        if not hit:
            _build(recipe, recipe_file, final, fp, limit, samples)
    stats = json.loads((final / "stats.json").read_text())
    # Settings that decide what is accepted but not the tokens (data.strict) are
    # checked on every call, a cache hit included, against the counts the build kept.
    if recipe.data.strict:
        for name, st in stats["sources"].items():
            if st["malformed"]:
                raise RecipeError([mixture.strict_problem(recipe_file, name, st["malformed"],
                                                          st["first_problems"])])
    _report(stats, limit, log)
    validation = load_from_disk(str(final / "validation")) if recipe.data.validation is not None else None
    return Prepared(load_from_disk(str(final / "arrow")), final, fp, stats, hit, validation)


@dataclass(frozen=True)
class SampleLimit:
    """The most tokens one sample may have: ``min(data.max_tokens, the model's context)``.

    ``data.max_tokens`` is the packed row's budget; a row may hold several
    samples, but no sample may be longer than the positions the model was
    built for (its config's ``max_position_embeddings``; for sliding-window
    and RoPE-scaled models too, as transformers sizes their position tables
    by it). Longer samples are truncated or dropped under ``data.overlong``.
    """
    tokens: int
    max_tokens: int
    context: int | None
    """The model's ``max_position_embeddings``; ``None`` when its config has none."""

    @property
    def why(self) -> str:
        """Where the limit comes from, for messages."""
        if self.context is not None and self.context < self.max_tokens:
            return (f"the model's context, max_position_embeddings = {self.context}, "
                    f"is below data.max_tokens = {self.max_tokens}")
        return f"data.max_tokens = {self.max_tokens}"


def sample_limit(recipe: Recipe, recipe_file: str = "recipe") -> SampleLimit:
    """The per-sample token limit of `recipe`; see `SampleLimit`.

    The model's config is read as `medtune.configs.load_config` reads it: the
    inline ``model.config``, a directory's ``config.json``, or a hub id's
    (cached, else medtune's published numbers, else downloaded). Raises
    `RecipeError` when it cannot be read.
    """
    from medtune.models.configs import load_config

    d = recipe.data
    try:
        cfg = load_config(recipe.model)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        key = "model.config" if recipe.model.config is not None else "model.name_or_path"
        raise RecipeError([f"{recipe_file}: {key}: cannot read the model's config to find its "
                           f"context length: {first}"]) from None
    context = getattr(cfg, "max_position_embeddings", None)
    context = context if isinstance(context, int) and context > 0 else None
    return SampleLimit(min(d.max_tokens, context or d.max_tokens), d.max_tokens, context)


def fingerprint(recipe: Recipe, limit: SampleLimit | None = None) -> str:
    """The cache key of `recipe`'s tokenized data: a hash of everything that changes it.

    `limit` is `sample_limit(recipe)` when the caller has it already.
    """
    from medtune.data.tokenizer import location

    limit = limit or sample_limit(recipe)
    h = hashlib.sha256()
    d = recipe.data
    keys = {"v": DATA_VERSION, "template": d.template, "max_tokens": d.max_tokens,
            "sample_tokens": limit.tokens, "overlong": d.overlong,
            "mixture_seed": d.mixture_seed, "dedup": d.dedup, "sources": sources_digest(recipe)}
    if d.validation is not None:  # absent: the key as it was before validation existed
        v = d.validation
        keys["validation"] = {"fraction": v.fraction, "samples": v.samples, "seed": v.seed,
                              "sources": None if v.sources is None else sources_digest(
                                  dataclasses.replace(recipe, data=dataclasses.replace(d, sources=v.sources)))}
    h.update(json.dumps(keys).encode())
    if d.system_prompt is not None or d.chat_template is not None:  # absent: the keys of older caches
        h.update(json.dumps({"system_prompt": d.system_prompt}).encode())
        if d.chat_template is not None:
            hash_path(h, Path(d.chat_template))
    h.update(_code_digest().encode())
    tok = Path(location(recipe))
    if tok.is_dir():
        for f in tokenizer_files(tok):
            hash_path(h, f)
    else:
        h.update(f"{tok}@{recipe.model.revision}".encode())
    added = {"pad_token": recipe.model.pad_token, "special_tokens": recipe.model.special_tokens}
    if any(added.values()):  # tokens the recipe adds change the ids (absent: the keys of older caches)
        h.update(json.dumps(added).encode())
    return h.hexdigest()[:16]


# The files that define a tokenizer; a model directory's weights are not among them.
_TOKENIZER_FILES = ("tokenizer*", "*.model", "vocab*", "merges.txt", "special_tokens_map.json",
                    "added_tokens.json", "chat_template*")


def tokenizer_files(directory: Path) -> list[Path]:
    return sorted({f for pattern in _TOKENIZER_FILES for f in directory.glob(pattern) if f.is_file()})


def _code_digest() -> str:
    """The data code's bytes: a change of reader, formatter or pool rebuilds the cache."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted([*here.glob("*.py"), *(here / "formats").glob("*.py")]):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _ensure_tokenizer(recipe: Recipe, recipe_file: str, root: Path):
    """Train the recipe's sentencepiece tokenizer if it needs one; the mixture read for it, if any."""
    from medtune.data.tokenizer import location, train_sentencepiece

    m = recipe.model
    where = Path(location(recipe))
    if m.train_tokenizer is None or where.exists():
        return None
    with locked(root / "tokenizer.lock"):
        if where.exists():
            return None
        # the training sources whole, validation or not: one tokenizer per sources digest
        built = mixture.build(dataclasses.replace(recipe.data, validation=None), recipe_file)
        texts = [templates.plain_text(s.record) for s in built[0]]
        if not texts:  # sentencepiece would stop with "[!sentences_.empty()]"
            raise RecipeError([f"{recipe_file}: data.sources: no text to train the tokenizer on "
                               "(model.train_tokenizer)"])
        train_sentencepiece(texts, where, m.train_tokenizer.vocab_size)
        return built if recipe.data.validation is None else None


def _build(recipe: Recipe, recipe_file: str, final: Path, fp: str, limit: SampleLimit,
           built=None) -> None:
    import datasets

    from medtune.data.tokenizer import load as load_tokenizer

    d = recipe.data
    parts = mixture.Split(built, None) if built else mixture.split(d, recipe_file)
    samples, stats = parts.train
    try:
        tokenizer = load_tokenizer(recipe)
    except RecipeError as err:  # data.template = chat on a tokenizer without a template
        raise RecipeError([f"{recipe_file}: {p}" for p in err.problems]) from None
    cols = _tokenize(samples, stats, d, tokenizer, recipe_file, limit)
    vcols = None
    if parts.validation is not None:
        vcols = _tokenize(*parts.validation, d, tokenizer, recipe_file, limit)
        if not vcols["length"]:
            raise RecipeError([f"{recipe_file}: data.validation: no validation samples (every source is "
                               "too small to hold one out, or every one was dropped as overlong)"])
    if not cols["length"]:  # every source had records (mixture.build checks): overlong drops took all
        dropped = sum(s.dropped for s in stats.values())
        raise RecipeError([f"{recipe_file}: data.overlong = {d.overlong}: no usable samples: all "
                           f"{dropped} were dropped as longer than {limit.tokens} tokens ({limit.why})"])
    summary = _summary(stats, cols, d.max_tokens, fp, limit, d.overlong)
    summary["content_digest"] = _content_digest(cols)
    if vcols is not None:
        vsum = _summary(parts.validation[1], vcols, d.max_tokens, fp, limit, d.overlong)
        summary["validation"] = {k: vsum[k] for k in ("samples", "tokens", "label_tokens", "sources", "packs")}
        summary["validation"]["removed_from_training"] = parts.overlap
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fp}-", dir=final.parent))
    try:
        datasets.disable_progress_bars()  # ours are the ones that matter
        # our own cache key is the fingerprint: `from_dict` would hash the whole table with dill,
        # which is slow and fails on some pyarrow/Python pairs (pyarrow 26 on Python 3.12:
        # "Can't pickle <class 'MonthDayNano'>", seen on the lent H200)
        table = datasets.table.InMemoryTable.from_pydict(cols)
        datasets.Dataset(table, fingerprint=fp).save_to_disk(str(tmp / "arrow"))
        if vcols is not None:
            vtable = datasets.table.InMemoryTable.from_pydict(vcols)
            datasets.Dataset(vtable, fingerprint=f"{fp}-validation").save_to_disk(str(tmp / "validation"))
        plot_lengths(_by_task(cols), d.max_tokens, tmp / "lengths.png", title=f"data {fp}")
        (tmp / "stats.json").write_text(json.dumps(summary, indent=2))  # last: marks it complete
        if final.exists():  # an older incomplete build: stats.json was missing
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(stats: dict, limit: SampleLimit, log) -> None:
    """The lines a prepare prints besides its table (on a build and on a cache hit alike)."""
    for name, st in stats["sources"].items():
        for problem in st["first_problems"]:
            log(f"skipped malformed record: {problem}")
        if st["malformed"] > len(st["first_problems"]):
            log(f"... and {st['malformed'] - len(st['first_problems'])} more malformed in '{name}'")
    if "validation" in stats:
        v = stats["validation"]
        log(f"validation: {v['samples']} samples, {v['label_tokens']} response tokens; "
            f"{v['removed_from_training']} training record(s) with the text of a validation record "
            "removed from training")
    if limit.tokens < limit.max_tokens:
        over = sum(st["truncated"] + st["dropped"] for st in stats["sources"].values())
        log(f"samples are limited to {limit.tokens} tokens: {limit.why}; {over} longer sample(s) "
            f"{'dropped' if stats['overlong'] == 'drop' else 'truncated'} (data.overlong)")


def _tokenize(samples: list[Sample], stats: dict[str, SourceStats], d: DataConfig, tokenizer,
              recipe_file: str, limit: SampleLimit) -> dict:
    """The dataset's columns, token lists as Arrow arrays converted batch by batch.

    Each batch's Python lists become Arrow (int32, converted in C++) at once
    and are dropped, so 200k samples never hold tens of millions of Python ints.
    A sample longer than ``limit.tokens`` is truncated or dropped (``data.overlong``).
    """
    import pyarrow as pa
    from tqdm import tqdm

    ints = pa.list_(pa.int32())
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    bar = tqdm(total=len(samples), desc="tokenize", unit=" rec", disable=None, leave=False)
    for start in range(0, len(samples), BATCH):
        chunk = samples[start:start + BATCH]
        rendered = [_render(s, d, tokenizer, recipe_file) for s in chunk]
        ids, labels = [], []
        for s, enc in zip(chunk, tokenize.encode_batch(rendered, tokenizer, limit.tokens)):
            st = stats[s.source]
            if enc.prompt_tokens >= limit.tokens:
                if d.overlong == "truncate":
                    raise RecipeError([
                        f"{recipe_file}: data.overlong = truncate: a prompt of source '{s.source}' has "
                        f"{enc.prompt_tokens} tokens, leaving no room for its answer in the "
                        f"{limit.tokens} a sample may have ({limit.why}); set data.overlong: drop"
                        + ("" if limit.tokens < limit.max_tokens else " or raise data.max_tokens")])
                st.dropped += 1
                st.samples -= 1
                continue
            if enc.truncated:
                if d.overlong == "drop":
                    st.dropped += 1
                    st.samples -= 1
                    continue
                st.truncated += 1
            st.tokens += len(enc.input_ids)
            ids.append(enc.input_ids)
            labels.append(enc.labels)
            cols["length"].append(len(enc.input_ids))
            cols["n_labels"].append(enc.n_labels)
            cols["source"].append(s.source)
            cols["task"].append(s.record.task)
        cols["input_ids"].append(pa.array(ids, type=ints))
        cols["labels"].append(pa.array(labels, type=ints))
        bar.update(len(chunk))
    bar.close()
    cols["input_ids"] = pa.chunked_array(cols["input_ids"], type=ints)
    cols["labels"] = pa.chunked_array(cols["labels"], type=ints)
    return cols


def _render(s: Sample, d: DataConfig, tokenizer, recipe_file: str) -> templates.Rendered:
    try:
        return templates.render(s.record, d.template, tokenizer, d.system_prompt)
    except ValueError as err:
        raise RecipeError([f"{recipe_file}: data.template = {d.template}: source '{s.source}': {err}"]) from None


def _content_digest(cols: dict) -> str:
    """A hash of the tokens and labels themselves: what a resumed run must train on again.

    Unlike the cache fingerprint it ignores how they were made, so a medtune
    upgrade that tokenizes the same data the same way resumes freely.
    """
    h = hashlib.sha256()
    for name in ("input_ids", "labels"):
        for chunk in cols[name].chunks:
            h.update(chunk.offsets.to_numpy().astype("int64").tobytes())
            h.update(chunk.values.to_numpy().tobytes())
    return h.hexdigest()[:16]


def _by_task(cols: dict[str, list]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for task, n in zip(cols["task"], cols["length"]):
        out.setdefault(task, []).append(n)
    return out


def _summary(stats: dict[str, SourceStats], cols: dict[str, list], max_tokens: int, fp: str,
             limit: SampleLimit, overlong: str) -> dict:
    from medtune.data.packing import pack

    packs = pack(cols["length"], max_tokens)
    total = sum(cols["length"])
    tasks: dict[str, dict] = {}
    for task, n, labels in zip(cols["task"], cols["length"], cols["n_labels"]):
        t = tasks.setdefault(task, {"samples": 0, "tokens": 0, "label_tokens": 0, "max_length": 0})
        t["samples"] += 1
        t["tokens"] += n
        t["label_tokens"] += labels
        t["max_length"] = max(t["max_length"], n)
    for t in tasks.values():
        t["mean_length"] = round(t["tokens"] / t["samples"], 1)
    return {
        "fingerprint": fp,
        "samples": len(cols["length"]),
        "tokens": total,
        "label_tokens": sum(cols["n_labels"]),
        "sources": {k: dataclasses.asdict(v) for k, v in stats.items()},
        "tasks": dict(sorted(tasks.items())),
        "max_tokens": max_tokens,
        "model_context": limit.context,
        "sample_tokens": limit.tokens,
        "overlong": overlong,
        "packs": len(packs),
        "packing_fill": total / (len(packs) * max_tokens),
    }


def plot_lengths(lengths: dict[str, list[int]], max_tokens: int, path: Path, title: str = "") -> None:
    """A token-length histogram per task, one panel each, sharing the x axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = sorted(lengths)
    fig = Figure(figsize=(7, 1.6 * len(tasks) + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tasks), 1, sharex=True, squeeze=False)[:, 0]
    bins = min(64, max_tokens)
    for ax, task in zip(axes, tasks):
        ax.hist(lengths[task], bins=bins, range=(0, max_tokens), color="tab:blue")
        ax.axvline(max_tokens, color="tab:red", linewidth=1)
        ax.set_ylabel("samples")
        n = len(lengths[task])
        ax.set_title(f"{task}: {n} samples, mean {sum(lengths[task]) / n:.0f} tokens", fontsize=9)
    axes[-1].set_xlabel(f"tokens per sample (max_tokens {max_tokens} in red)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
