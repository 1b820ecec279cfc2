"""Build the training data of a recipe once, cache it, and reuse it.

``prepare(recipe)`` builds the mixture (`medtune.data.mixture`), renders and
tokenizes every sample, and saves the result with `datasets` (Arrow) under a
directory named by a fingerprint of everything that changes the tokens: the
bytes of the files each source reads, every source setting (split, tags,
pool, weight, cap, ...), the mixture seed, dedup, the template,
``max_tokens``/``overlong``, the data code itself and the tokenizer. A second
call with the same inputs is a cache hit. Every process may call it: a file
lock lets the first one build while the others wait, and the cache appears
by an atomic rename only when complete, so a crash never leaves a half cache.

The cache directory holds::

    arrow/        the dataset: input_ids, labels, length, n_labels, source, task
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

from medtune.config import DataConfig, Recipe, RecipeError
from medtune.data import mixture, templates, tokenize
from medtune.data.formats import source_files
from medtune.data.mixture import Sample, SourceStats, source_name
from medtune.fsutil import locked

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


def cache_root(recipe: Recipe) -> Path:
    if recipe.data.cache_dir:
        return Path(recipe.data.cache_dir)
    return Path(os.environ.get("MEDTUNE_CACHE", Path.home() / ".cache" / "medtune"))


def prepare(recipe: Recipe, recipe_file: str = "recipe", log=print) -> Prepared:
    """Tokenized, cached training data of `recipe` (built on first use)."""
    from datasets import load_from_disk

    root = cache_root(recipe)
    root.mkdir(parents=True, exist_ok=True)
    samples = _ensure_tokenizer(recipe, recipe_file, root)
    fp = fingerprint(recipe)
    final = root / "data" / fp
    with locked(root / "data" / f"{fp}.lock"):
        hit = (final / "stats.json").is_file()
        if not hit:
            _build(recipe, recipe_file, final, fp, log, samples)
    stats = json.loads((final / "stats.json").read_text())
    return Prepared(load_from_disk(str(final / "arrow")), final, fp, stats, hit)


def fingerprint(recipe: Recipe) -> str:
    from medtune.data.tokenizer import location

    h = hashlib.sha256()
    d = recipe.data
    h.update(json.dumps({"v": DATA_VERSION, "template": d.template, "max_tokens": d.max_tokens,
                         "overlong": d.overlong, "mixture_seed": d.mixture_seed, "dedup": d.dedup,
                         "sources": sources_digest(recipe)}).encode())
    h.update(_code_digest().encode())
    tok = Path(location(recipe))
    if tok.is_dir():
        for f in tokenizer_files(tok):
            _hash_path(h, f)
    else:
        h.update(f"{tok}@{recipe.model.revision}".encode())
    return h.hexdigest()[:16]


# The files that define a tokenizer; a model directory's weights are not among them.
_TOKENIZER_FILES = ("tokenizer*", "*.model", "vocab*", "merges.txt", "special_tokens_map.json",
                    "added_tokens.json", "chat_template*")


def tokenizer_files(directory: Path) -> list[Path]:
    return sorted({f for pattern in _TOKENIZER_FILES for f in directory.glob(pattern) if f.is_file()})


def sources_digest(recipe: Recipe) -> str:
    """A hash of every source's settings and file bytes (hub ids: id and revision).

    Names the tokenizer medtune trains from the data, so it depends on the
    data alone: an upgrade of medtune's code never retrains it under a run.
    """
    h = hashlib.sha256()
    for src in recipe.data.sources:
        settings = {k: v for k, v in dataclasses.asdict(src).items() if k != "path"}
        h.update(json.dumps([settings, source_name(src)], sort_keys=True).encode())
        found = source_files(src.format, src.path, src.split)
        if not found:  # a hub id
            h.update(src.path.encode())
        for f in found:
            _hash_path(h, f)
    return h.hexdigest()[:12]


def _code_digest() -> str:
    """The data code's bytes: a change of reader, formatter or pool rebuilds the cache."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted([*here.glob("*.py"), *(here / "formats").glob("*.py")]):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _hash_path(h, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)


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
        built = mixture.build(recipe.data, recipe_file)
        texts = [templates.PAPER_PROMPT.format(instruction=s.record.instruction, input=s.record.input)
                 + " " + s.record.output for s in built[0]]
        train_sentencepiece(texts, where, m.train_tokenizer.vocab_size)
        return built


def _build(recipe: Recipe, recipe_file: str, final: Path, fp: str, log, built=None) -> None:
    import datasets

    from medtune.data.tokenizer import load as load_tokenizer

    d = recipe.data
    samples, stats = built or mixture.build(d, recipe_file)
    cols = _tokenize(samples, stats, d, load_tokenizer(recipe), recipe_file)
    if not cols["length"]:
        raise RecipeError([f"{recipe_file}: data.sources: no usable samples "
                           f"(malformed: {sum(s.malformed for s in stats.values())})"])
    summary = _summary(stats, cols, d.max_tokens, fp)
    summary["content_digest"] = _content_digest(cols)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{fp}-", dir=final.parent))
    try:
        datasets.disable_progress_bars()  # ours are the ones that matter
        datasets.Dataset.from_dict(cols).save_to_disk(str(tmp / "arrow"))
        plot_lengths(_by_task(cols), d.max_tokens, tmp / "lengths.png", title=f"data {fp}")
        (tmp / "stats.json").write_text(json.dumps(summary, indent=2))  # last: marks it complete
        if final.exists():  # an older incomplete build: stats.json was missing
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, st in stats.items():
        for problem in st.first_problems:
            log(f"skipped malformed record: {problem}")
        if st.malformed > len(st.first_problems):
            log(f"... and {st.malformed - len(st.first_problems)} more malformed in '{name}'")


def _tokenize(samples: list[Sample], stats: dict[str, SourceStats], d: DataConfig, tokenizer,
              recipe_file: str) -> dict:
    """The dataset's columns, token lists as Arrow arrays converted batch by batch.

    Each batch's Python lists become Arrow (int32, converted in C++) at once
    and are dropped, so 200k samples never hold tens of millions of Python ints.
    """
    import pyarrow as pa
    from tqdm import tqdm

    ints = pa.list_(pa.int32())
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    bar = tqdm(total=len(samples), desc="tokenize", unit=" rec", disable=None, leave=False)
    for start in range(0, len(samples), BATCH):
        chunk = samples[start:start + BATCH]
        rendered = [templates.render(s.record, d.template, tokenizer) for s in chunk]
        ids, labels = [], []
        for s, enc in zip(chunk, tokenize.encode_batch(rendered, tokenizer, d.max_tokens)):
            st = stats[s.source]
            if enc.prompt_tokens >= d.max_tokens:
                if d.overlong == "truncate":
                    raise RecipeError([
                        f"{recipe_file}: data.max_tokens = {d.max_tokens}: a prompt of source "
                        f"'{s.source}' has {enc.prompt_tokens} tokens, leaving no room for its answer; "
                        "raise data.max_tokens or set data.overlong: drop"])
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


def _summary(stats: dict[str, SourceStats], cols: dict[str, list], max_tokens: int, fp: str) -> dict:
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
