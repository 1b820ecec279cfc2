"""Recipes: typed, frozen configuration loaded from YAML.

A recipe file has seven sections (``model``, ``data``, ``train``, ``zero``,
``kernels``, ``launch``, ``logging``) and may name ``base:`` files (one path or a list)
that it builds on: bases are merged in order, then the file's own keys win.
A base is looked up beside the file first, then under the repository's
``recipes/`` folder, so ``base: [models/tiny-llama.yaml, data/demo.yaml]``
works from anywhere. Command-line overrides (``train.lr=2e-5``) come last.

Every problem in a recipe is collected and reported at once, one line each,
naming the file that set the key::

    recipes/x.yaml: train.lr = -1: must be greater than 0

This module imports no torch, deepspeed or transformers, so validation runs
before any process starts and ``medtune --help`` stays instant.
"""
from __future__ import annotations

import difflib
import os
import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from medtune.base.errors import RecipeError  # noqa: F401 (medtune.config.RecipeError, as before)

RECIPES_ROOT = Path(__file__).resolve().parent.parent / "recipes"
COMMAND_LINE = "command line"

_SCHEMA = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def section(cls):
    """A schema class: a frozen, keyword-only pydantic dataclass refusing unknown keys, its
    attribute docstrings kept as field descriptions (recipes and evaluation recipes alike)."""
    return dataclass(frozen=True, kw_only=True, config=_SCHEMA)(cls)


_section = section


RESUME = "resume"
"""The key of a field's ``json_schema_extra`` that says what a change of it means to a resumed run:
``refuse`` (it changes what the run computes: resuming is refused unless ``--allow-changed``) or
``free`` (how often to save or log, where to cache, how to launch, ZeRO's communication tuning, the
compute kernels: none changes the math beyond rounding). An unmarked field takes its section's
kind; every section of `Recipe` is marked. `resume_fields` reads the marks."""
REFUSE = {RESUME: "refuse"}
FREE = {RESUME: "free"}


@_section
class TokenizerTrain:
    vocab_size: int = Field(default=2000, ge=64)
    """Vocabulary size of the sentencepiece model medtune trains from the
    recipe's data when ``model.tokenizer`` does not exist yet."""


@_section
class ModelConfig:
    name_or_path: str | None = None
    """Hugging Face hub id or local directory loaded with ``from_pretrained``."""
    config: dict[str, Any] | None = None
    """Inline Hugging Face config (must hold ``model_type``) for a model built
    from scratch; used instead of ``name_or_path`` for tiny test models."""
    family: str | None = None
    """Optional label: the model's transformers ``model_type`` (llama, gemma2, ...).
    Any causal LM transformers has trains, listed in ``medtune.models.families`` or not;
    with an inline ``config`` its ``model_type`` must agree."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; defaults to ``name_or_path``."""
    train_tokenizer: TokenizerTrain | None = None
    """Train a sentencepiece tokenizer from the recipe's data when
    ``tokenizer`` is absent (into the data cache when ``tokenizer`` is unset)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of ``name_or_path``."""
    pad_token: str | None = None
    """The tokenizer's padding token (e.g. ``<pad>``), added to the vocabulary
    when it is not in it; the export's tokenizer then pads with it."""
    special_tokens: list[str] = Field(default_factory=list)
    """Special tokens added to the tokenizer (never split, skipped when
    decoding). Tokens beyond the model's rows grow its embedding and output
    layers, each new row set to the mean of the old ones."""
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    """Training dtype: ``auto`` is bf16 on GPUs that support it, else fp32."""
    gradient_checkpointing: bool = Field(default=False, json_schema_extra=FREE)
    """Recompute activations in the backward pass to save memory."""
    trust_remote_code: bool = False
    """Allow model code from the hub (only for families transformers lacks)."""


@_section
class SourceConfig:
    path: str
    """File or directory (or hub id for ``format: hub``) to read, relative to
    the recipe file that names it; ``$VARS`` are expanded (``$MEDTUNE_DATA/hoc``)."""
    format: str = "jsonl"
    """Reader: see ``medtune.data.formats.READERS``."""
    name: str | None = None
    """Name used in statistics and logs; defaults to the file's stem."""
    split: str = "train"
    """Split to read: with a directory ``path`` the reader picks the split's
    file (``train.tsv``, ``mli_train_v1.jsonl``, ...); PubMedQA: ``train``
    (items outside the test set), ``test`` or ``all``; a hub dataset's split.
    A ``path`` that is a file is read as it is."""
    tags: Literal["untyped", "typed"] = "untyped"
    """``conll`` only: ``untyped`` writes B/I/O (types collapse into one
    class, as the paper did for the five biomedical NER sets); ``typed``
    keeps ``B-TYPE``/``I-TYPE`` (i2b2-2012)."""
    instructions: str | list[str] | None = None
    """What each record draws its instruction from: a pool name (a key of
    ``medtune.data.templates.POOLS``), a list of instructions, or a text file
    with one per line (a string with a ``/`` or a ``.``; relative to the
    recipe). ``{types}`` in one is replaced by the source's entity types.
    Default: the pool named like the record's task for corpus readers; a
    generic source keeps its records' own instructions unless one is given."""
    weight: float = Field(default=1.0, gt=0)
    """Samples per record read: 0.5 keeps a seeded half, 2.0 repeats every
    record twice (each copy draws its own instruction)."""
    cap: int | None = Field(default=None, ge=1)
    """At most this many samples from the source (a seeded choice), after ``weight``."""
    task: str | None = None
    """``jsonl``/``hub`` only: the task name of every record (default: each
    record's ``task`` field, else ``generic``)."""
    include: list[str] | None = None
    """``jsonl``/``hub`` only: keep only records whose ``source`` field is
    listed (e.g. some origins of nlpie/Llama2-MedTuned-Instructions)."""
    revision: str | None = None
    """``hub`` only: the dataset revision (commit or tag) to load. The cache
    key of a hub id is the id and this revision: pin one to make it exact."""
    columns: dict[str, str] | None = None
    """Field name -> the table's column name, e.g. ``{instruction: question,
    input: context, output: answer}`` or ``{messages: dialog}`` (fields per
    reader: ``medtune.data.formats.FIELDS``)."""
    instruction: str | None = None
    """``jsonl``/``hub`` only: one fixed instruction for every record, for a
    table with none (its own instruction column, if any, is not read)."""


@_section
class ValidationConfig:
    """Held-out data for ``eval/loss`` during training: give exactly one of
    ``fraction``, ``samples`` or ``sources``."""
    fraction: float | None = Field(default=None, gt=0, lt=1)
    """Hold out this seeded fraction of each source's records (read, after
    ``dedup``; at least one record per source, and at least one left to train on)."""
    samples: int | None = Field(default=None, ge=1)
    """Hold out this many seeded records of each source (at most all but one)."""
    sources: list[SourceConfig] | None = None
    """Explicit validation sources, same shape as ``data.sources`` (e.g. the
    corpora's ``split: devel``); their ``cap`` limits them."""
    seed: int = 0
    """Seed of the held-out choice (``fraction``/``samples``)."""


@_section
class DataConfig:
    sources: list[SourceConfig] = Field(default_factory=list)
    """Instruction sources, each read into ``{instruction, input, output}``."""
    template: Literal["paper", "chat"] = "paper"
    """``paper``: ``### Instruction: ...\\n ### Input: ...\\n ### Output: ...``
    then EOS (Rohanian et al. 2024); ``chat``: the tokenizer's chat template
    (or ``chat_template``). Loss falls on every assistant turn."""
    chat_template: str | None = None
    """A Jinja chat template file (relative to the recipe) used instead of the
    tokenizer's own; saved with the exported tokenizer."""
    system_prompt: str | None = None
    """A system turn put first in every conversation that has none."""
    max_tokens: int = Field(default=2048, ge=8)
    """Tokens per packed row; a sample is never split across rows."""
    overlong: Literal["truncate", "drop"] = "truncate"
    """What happens to a sample longer than ``max_tokens`` (counted either way)."""
    seed: int = 0
    """Seed of the packing order."""
    mixture_seed: int = 0
    """Seed of the mixture: the instruction each record draws from its pool
    and the records a fractional ``weight`` or a ``cap`` keeps."""
    dedup: bool = True
    """Drop exact duplicates (same instruction as read, input and output)
    across all sources, keeping the first; counted per source."""
    strict: bool = False
    """Make a malformed line or record an error instead of skipping and
    counting it."""
    cache_dir: str | None = Field(default=None, json_schema_extra=FREE)
    """Where tokenized data is cached; default ``$MEDTUNE_CACHE`` or
    ``~/.cache/medtune``."""
    validation: ValidationConfig | None = Field(default=None, json_schema_extra=FREE)
    """Held-out validation data (``eval/loss``). A training record whose text
    (instruction as read, input, output) equals a validation record's is
    removed from training and counted; absent: no validation data, and the
    training data is exactly what it was without this key."""


@_section
class TrainConfig:
    epochs: int = Field(default=1, ge=1)
    """Passes over the data."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (``None``: run all epochs)."""
    grad_accum: int = Field(default=1, ge=1)
    """Packed rows each rank accumulates per optimizer step."""
    lr: float = Field(default=2e-5, gt=0)
    """Peak learning rate of AdamW."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup (transformers' schedule implementations)."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warmup steps; wins over ``warmup_ratio`` when non-zero."""
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Warmup as a fraction of all optimizer steps."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay (never applied to biases and norm weights)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    adam_eps: float = Field(default=1e-8, gt=0)
    """AdamW epsilon."""
    max_grad_norm: float = Field(default=1.0, ge=0)
    """Clip the global gradient norm to this (0 turns clipping off)."""
    seed: int = 42
    """Seed of model initialisation and every rank's RNGs."""
    save_every: int = Field(default=0, ge=0, json_schema_extra=FREE)
    """Write a checkpoint every N optimizer steps (0: only at the end)."""
    keep_last: int | None = Field(default=None, ge=1, json_schema_extra=FREE)
    """Keep only the newest N complete checkpoints (``None``: keep all). The
    newest complete checkpoint is never deleted."""
    max_bad_steps: int = Field(default=5, ge=1, json_schema_extra=FREE)
    """Stop (with a checkpoint of the last good weights) after this many
    optimizer steps in a row with a non-finite loss or gradient; each such
    step is skipped, not applied."""
    loss_normalisation: Literal["tokens", "micro_mean"] = "tokens"
    """``tokens``: the step's loss is the mean over every response token of
    the step, across micro-batches and ranks. ``micro_mean`` (a mean of
    per-micro-batch means, as older Trainers did) only reproduces old runs."""
    export: bool = Field(default=True, json_schema_extra=FREE)
    """Write a verified Hugging Face export at the end of training."""
    eval_every: int = Field(default=0, ge=0, json_schema_extra=FREE)
    """Evaluate every N optimizer steps and at the end (0: never): ``eval/loss``
    over ``data.validation`` and the task metrics of ``eval_tasks``."""
    eval_tasks: str | None = Field(default=None, json_schema_extra=FREE)
    """An evaluation recipe (``recipes/eval/*.yaml``) whose task metrics
    (``eval/<set>/<metric>``) are computed at each evaluation."""
    eval_tasks_limit: int | None = Field(default=None, ge=1, json_schema_extra=FREE)
    """Samples per set of ``eval_tasks`` (``None``: the evaluation recipe's own limit)."""
    best_metric: str | None = Field(default=None, json_schema_extra=FREE)
    """The logged metric that picks the best checkpoint (``eval/loss`` or
    ``eval/<set>/<metric>``); a checkpoint is then written at every evaluation
    and the best one is kept as ``checkpoints/best`` whatever ``keep_last`` says."""
    best_mode: Literal["min", "max"] | None = Field(default=None, json_schema_extra=FREE)
    """Whether lower or higher ``best_metric`` is better (default: ``min`` for
    names ending in ``loss``, else ``max``)."""


@_section
class ZeroConfig:
    deepspeed_config: str | None = None
    """A whole DeepSpeed JSON to use instead of the generated one: ``"auto"``
    is filled in as transformers does, batch sizes, accumulation, clipping
    and precision come from the recipe, blocks medtune does not use are
    refused (rules: ``medtune.engine.zero``)."""
    overlap_comm: bool = True
    """Overlap gradient reduction with the backward pass."""
    contiguous_gradients: bool = True
    """Copy gradients into one buffer as they are produced (less fragmentation)."""
    reduce_bucket_size: int | Literal["auto"] = "auto"
    """Elements per reduce-scatter bucket; ``auto``: hidden_size²."""
    prefetch_bucket_size: int | Literal["auto"] = "auto"
    """Elements prefetched ahead of use; ``auto``: 0.9 × hidden_size²."""
    param_persistence_threshold: int | Literal["auto"] = "auto"
    """Parameters smaller than this stay unpartitioned; ``auto``: 10 × hidden_size."""
    max_live_parameters: int = Field(default=1_000_000_000, ge=0)
    """Gathered parameters kept alive at once."""
    max_reuse_distance: int | Literal["auto"] = "auto"
    """A gathered parameter used again within this many elements of the
    module trace stays gathered (DeepSpeed's ``stage3_max_reuse_distance``);
    ``auto``: ``max_live_parameters``."""
    offload_optimizer: Literal["none", "cpu"] = "none"
    """Keep optimizer states in host memory."""
    offload_params: Literal["none", "cpu"] = "none"
    """Keep partitioned parameters in host memory."""
    hierarchy: Literal["auto", "off"] | int | bool = "auto"
    """hpZ (ZeRO++ hierarchical partitioning): a gathered weight also keeps a
    shard of 1/size of it within a group of ranks on one node, so the
    backward and every later micro-batch gather over NVLink and only the
    first forward of an optimizer step crosses nodes. ``auto``: groups of
    one node (``launch.procs``) when the run spans several nodes, off on
    one; ``off``; or a size that divides ``launch.procs`` and the world
    size. Costs 1/size of the weights per GPU; the math is unchanged, so a
    run may resume with another setting. ``medtune plan`` shows the traffic."""
    quantized_weights: bool = False
    """qwZ: all-gather weights as int8 with a scale per block (half of bf16's
    bytes; lossy in transit). CUDA only."""
    quantized_gradients: bool = False
    """qgZ: reduce gradients across nodes as int4 through two all-to-alls
    (lossy in transit). CUDA only; needs more than one node."""


@_section
class KernelsConfig:
    attention: Literal["auto", "flash_attn", "torch_varlen", "sdpa_varlen", "sdpa", "eager",
                       "flex_attention"] = "auto"
    """Attention over packed rows; every choice keeps each sample to itself.
    ``flash_attn``: the flash-attn package's varlen kernel (CUDA, bf16/fp16);
    ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention
    inside PyTorch, CUDA); ``sdpa_varlen``: PyTorch SDPA run per sample (any
    device, no cross-sample work); ``sdpa``/``eager``/``flex_attention``:
    transformers' own paths (a dense mask over the whole row). ``auto``: the
    first of flash_attn, torch_varlen, sdpa_varlen that runs on this device,
    dtype and head size (said once in the log)."""
    loss: Literal["standard", "chunked"] = "standard"
    """``standard``: logits of the response positions only, then
    cross-entropy; ``chunked``: a fused linear + cross-entropy over chunks of
    tokens that never holds the whole ``[tokens, vocab]`` logits (for large
    vocabularies or long rows)."""
    loss_chunk_tokens: int = Field(default=0, ge=0)
    """Tokens per chunk of the ``chunked`` loss; 0: about as many logits as
    the row has hidden-state values (tokens x hidden / vocab, at least 64)."""


@_section
class LaunchConfig:
    procs: int = Field(default=1, ge=1)
    """Ranks per node (GPUs on a GPU node, CPU processes otherwise)."""
    nodes: int = Field(default=1, ge=1)
    """Nodes of a multi-node launch (``medtune launch``/``medtune slurm``)."""
    slurm_tasks: Literal["per_rank", "per_node"] = "per_rank"
    """Under Slurm: one ``srun`` task per rank (ranks read SLURM_PROCID etc.),
    or one per node running the DeepSpeed launcher with ``--no_ssh``."""
    master_port: int | None = Field(default=None, ge=1024, le=65535)
    """Rendezvous port; a free one is picked when unset."""
    timeout_minutes: float = Field(default=30.0, gt=0)
    """Collective timeout given to the process group."""
    threads_per_proc: int | None = Field(default=None, ge=1)
    """CPU threads per rank; default: cores / procs."""


@_section
class LoggingConfig:
    every: int = Field(default=1, ge=1)
    """Log scalars every N optimizer steps."""
    tensorboard: bool = True
    """Write TensorBoard events under ``RUN_DIR/tensorboard``; ``false`` takes
    ``tensorboard`` out of ``report_to``."""
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"])
    """Experiment trackers that receive every scalar of ``metrics.jsonl`` and the
    resolved recipe as the run's config (`medtune.engine.trackers`); ``wandb``
    and ``mlflow`` need ``pip install 'medtune[wandb]'`` / ``'medtune[mlflow]'``."""
    progress: bool = True
    """Show a progress bar on rank 0."""
    peak_tflops: float | None = Field(default=None, gt=0)
    """Peak dense bf16 TFLOP/s of one accelerator, for MFU; default: looked
    up for A100/H100/H200 by device name (no MFU on CPU unless set)."""
    comm_log: bool = False
    """Turn on DeepSpeed's comms logger and write each rank's collectives per
    optimizer step (op, calls, bytes, milliseconds) to
    ``RUN_DIR/comm/rank-NNNNN.jsonl`` (``--comm-log``). Every collective
    then waits for completion: for diagnosis, not for speed."""


@_section
class Recipe:
    name: str = Field(default="run", json_schema_extra=FREE)
    """Run name; defaults to the recipe file's stem."""
    model: ModelConfig = Field(default_factory=ModelConfig, json_schema_extra=REFUSE)
    data: DataConfig = Field(default_factory=DataConfig, json_schema_extra=REFUSE)
    train: TrainConfig = Field(default_factory=TrainConfig, json_schema_extra=REFUSE)
    zero: ZeroConfig = Field(default_factory=ZeroConfig, json_schema_extra=FREE)
    kernels: KernelsConfig = Field(default_factory=KernelsConfig, json_schema_extra=FREE)
    launch: LaunchConfig = Field(default_factory=LaunchConfig, json_schema_extra=FREE)
    logging: LoggingConfig = Field(default_factory=LoggingConfig, json_schema_extra=FREE)


def resume_fields(cls=None, prefix: str = "", inherited: str = "refuse") -> dict[str, str]:
    """Dotted key -> ``refuse`` | ``free`` for every field of the schema class `cls` (default
    `Recipe`) and the fields of its sections; items of a list of sections as ``*``
    (``data.sources.*.weight``). A field's kind is its `RESUME` mark, else its section's."""
    out: dict[str, str] = {}
    for name, info in (cls or Recipe).__pydantic_fields__.items():
        kind = (info.json_schema_extra or {}).get(RESUME, inherited)
        key = f"{prefix}{name}"
        out[key] = kind
        inner = _dataclass_in(info.annotation)
        if inner is not None:
            listed = typing.get_origin(info.annotation) is list
            out.update(resume_fields(inner, f"{key}.*." if listed else f"{key}.", kind))
    return out


# --------------------------------------------------------------------------
# Loading: YAML files, `base:` composition, dotted overrides, provenance.
# --------------------------------------------------------------------------

def compose(path: str | os.PathLike, resolve_paths=None, noun: str = "recipe") -> tuple[dict, dict[str, str]]:
    """The YAML mapping of `path` with its ``base:`` files merged in, and its provenance.

    Bases (a path or a list) are merged in order, then the file's own keys
    win; mappings merge key by key, lists and scalars replace. A base is
    looked up beside the file, then under ``recipes/``. `resolve_paths(raw,
    folder)` rewrites one file's relative paths against its folder before
    the merge (default: a training recipe's path keys). Provenance maps each
    dotted key (list items by index: ``data.sources.0.path``) to the file that
    set it. Raises `RecipeError` naming the file (missing, not a mapping,
    bad YAML, a ``base:`` cycle).
    """
    return _load_tree(Path(path), (), resolve_paths or _resolve_paths, noun)


def apply_overrides(tree: dict, origin: dict[str, str], overrides: list[str] | tuple[str, ...]) -> None:
    """Set each ``dotted.key=value`` of `overrides` in `tree` (YAML-typed values), provenance
    `COMMAND_LINE`. A numeric part indexes a list (``data.sources.0.weight=2``, as Hydra/OmegaConf
    dotlists do); an index past the list's end is a `RecipeError` naming the override."""
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(tree, key, value, item)
        origin[key] = COMMAND_LINE


def build(cls, tree: dict, origin: dict[str, str], default_file: str):
    """Validate `tree` into the schema class `cls` (a `_section` dataclass); every problem at once.

    Raises `RecipeError`, one line per problem, each naming the file (from
    `origin`) and the dotted key: ``FILE: train.lr = -1: must be greater than 0``.
    """
    try:
        return cls(**tree)
    except ValidationError as err:
        raise RecipeError([_describe(e, origin, default_file, cls)
                           for e in _join_union_branches(err.errors(), cls)]) from None
    except TypeError as err:  # a section given as a scalar or a list
        raise RecipeError([f"{default_file}: {err}"]) from None


def where(key: str, origin: dict[str, str], default_file: str) -> str:
    """The file (or `COMMAND_LINE`) that set dotted `key` or its nearest parent."""
    return _where(key, origin, default_file)


def load(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
         defaults: list[str | os.PathLike] | tuple[str | os.PathLike, ...] = (),
         check_files: bool = True, provenance: dict[str, str] | None = None) -> Recipe:
    """Load, compose and validate a recipe; raise `RecipeError` listing every problem.

    `defaults` are recipe files that supply whole sections the recipe (with
    its bases) lacks, before overrides: ``medtune prepare`` gives a data-only
    recipe the model section of ``models/tiny-llama.yaml`` so it has a tokenizer.
    `provenance`, when given, is filled with ``{dotted key: file or "command
    line"}`` for every key a file or override set (a list is one key).
    """
    path = Path(path)
    tree, origin = compose(path)
    for extra in defaults:
        sub, sub_origin = compose(extra)
        for section, value in sub.items():
            if section not in tree:
                tree[section] = value
                origin.update({k: v for k, v in sub_origin.items()
                               if k == section or k.startswith(section + ".")})
    tree.setdefault("name", path.stem)
    origin.setdefault("name", str(path))
    apply_overrides(tree, origin, overrides)
    if provenance is not None:
        provenance.update(origin)
    return validate(tree, origin, default_file=str(path), check_files=check_files)


def validate(tree: dict, origin: dict[str, str], default_file: str,
             check_files: bool = True) -> Recipe:
    """Turn a merged tree into a `Recipe`, reporting every problem at once."""
    problems: list[str] = []
    recipe = build(Recipe, tree, origin, default_file)
    for key, msg in _cross_checks(recipe, check_files):
        problems.append(f"{_where(key, origin, default_file)}: {key}: {msg}")
    if problems:
        raise RecipeError(problems)
    return recipe


CHECKS: list = []
"""Checks that need a part's knowledge, registered by that part (`register_check`):
``check(recipe, check_files) -> [(dotted key, message), ...]``, run by `validate`
among its cross-field rules. `medtune.data.checks` registers the sources' readers,
files, settings and instruction pools, `medtune.models.checks` the model family;
``medtune/__init__.py`` imports both, so the checks are in place whenever any
medtune module is."""


def register_check(check):
    """Add `check` (see `CHECKS`) once; returns it, so it can decorate."""
    if check not in CHECKS:
        CHECKS.append(check)
    return check


def _cross_checks(r: Recipe, check_files: bool = True) -> list[tuple[str, str]]:
    """Rules that span fields: (dotted key, message) for each broken one."""
    out = []
    parts = r.name.split("/")
    if r.name.startswith("/") or any(part.strip() in ("", ".", "..") for part in parts) or "\0" in r.name:
        # runs/<name> is the default run directory: '..' or '' would put a run in runs/'s parent or
        # in runs/ itself, beside (and over) other runs
        out.append(("name", f"{r.name!r}: the default run directory is runs/<name>, so a name must "
                            "stay inside runs/ (no empty, '.' or '..' parts, no leading '/'); "
                            "choose another name or give --run-dir"))
    m = r.model
    if (m.name_or_path is None) == (m.config is None):
        out.append(("model", "give exactly one of model.name_or_path (hub id or directory) "
                             "or model.config (an inline config for a model built from scratch)"))
    if m.config is not None and "model_type" not in m.config:
        out.append(("model.config", "an inline config needs model_type (e.g. llama, mistral, qwen2)"))
    if m.config is not None and m.tokenizer is None and m.train_tokenizer is None:
        out.append(("model.tokenizer", "a model built from model.config needs model.tokenizer "
                                       "or model.train_tokenizer"))
    if not r.data.sources:
        out.append(("data.sources", "no data sources: add at least one {path, format}"))
    out += _evaluation_checks(r)
    for check in CHECKS:  # registered by the parts that know readers, pools, ...
        out += check(r, check_files)
    if r.zero.deepspeed_config is not None and not Path(r.zero.deepspeed_config).is_file():
        out.append(("zero.deepspeed_config", f"{r.zero.deepspeed_config} does not exist"))
    if m.name_or_path and looks_local(m.name_or_path):
        where = Path(m.name_or_path).expanduser()
        if not where.is_dir():
            out.append(("model.name_or_path", f"{m.name_or_path}: no such directory (a local model "
                                              "directory must exist; a hub id is owner/name)"))
        elif not (where / "config.json").is_file():
            out.append(("model.name_or_path", f"{m.name_or_path} has no config.json: not a Hugging Face "
                                              "model directory (save_pretrained writes one)"))
    local_tok = m.tokenizer and looks_local(m.tokenizer)
    if local_tok and m.train_tokenizer is None and not Path(m.tokenizer).exists():
        out.append(("model.tokenizer", f"{m.tokenizer} does not exist (set model.train_tokenizer "
                                       "to train one there)"))
    return out


BEST_METRIC = re.compile(r"^eval/(loss|[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)$")
"""The form of ``train.best_metric``: ``eval/loss`` or ``eval/<set>/<metric>``."""


def _evaluation_checks(r: Recipe) -> list[tuple[str, str]]:
    """``data.validation`` and ``train.eval_*``/``best_*`` rules that span fields."""
    out = []
    v, t = r.data.validation, r.train
    if v is not None and sum(x is not None for x in (v.fraction, v.samples, v.sources)) != 1:
        out.append(("data.validation", "give exactly one of fraction (e.g. 0.05), samples (per source) "
                                       "or sources (like data.sources)"))
    elif v is not None and v.sources is not None and not v.sources:
        out.append(("data.validation.sources", "an empty list: add at least one {path, format}"))
    if t.eval_every and v is None and t.eval_tasks is None:
        out.append(("train.eval_every", "nothing to evaluate: set data.validation (for eval/loss) "
                                        "or train.eval_tasks"))
    if t.eval_tasks is not None and not Path(t.eval_tasks).is_file():
        out.append(("train.eval_tasks", f"{t.eval_tasks} does not exist (an evaluation recipe, "
                                        "e.g. recipes/eval/shared-slice.yaml)"))
    if (t.eval_tasks is not None or t.eval_tasks_limit is not None) and not t.eval_every:
        key = "train.eval_tasks" if t.eval_tasks is not None else "train.eval_tasks_limit"
        out.append((key, "needs train.eval_every (steps between evaluations)"))
    if t.best_metric is None:
        if t.best_mode is not None:
            out.append(("train.best_mode", "needs train.best_metric (e.g. eval/loss)"))
        return out
    if not BEST_METRIC.match(t.best_metric):
        out.append(("train.best_metric", f"{t.best_metric!r}: must be eval/loss or eval/<set>/<metric> "
                                         "(e.g. eval/ncbi_disease/f1)"))
    elif not t.eval_every:
        out.append(("train.best_metric", "needs train.eval_every (steps between evaluations)"))
    elif t.best_metric == "eval/loss" and v is None:
        out.append(("train.best_metric", "eval/loss needs data.validation"))
    elif t.best_metric != "eval/loss" and t.eval_tasks is None:
        out.append(("train.best_metric", f"{t.best_metric} is a task metric: set train.eval_tasks"))
    return out


def best_mode(train: TrainConfig) -> str:
    """``train.best_mode``, else ``min`` for a metric named ``...loss`` and ``max`` otherwise."""
    if train.best_mode is not None:
        return train.best_mode
    return "min" if (train.best_metric or "").endswith("loss") else "max"


def looks_local(value: str) -> bool:
    """Whether ``model.name_or_path``/``model.tokenizer`` means a directory rather than a hub id.

    Absolute, ``./``, ``../`` or ``~`` paths, anything with more than one
    ``/`` (a hub id is ``owner/name``), anything that exists and an
    ``a/b`` whose ``a`` is an existing directory are directories
    (transformers, too, loads an existing directory first).
    """
    return (value.startswith(("/", "./", "../", "~")) or value.count("/") > 1
            or Path(value).expanduser().exists()
            or ("/" in value and Path(value.split("/", 1)[0]).is_dir()))


# Keys that moved between sections: the error names the new place.
_MOVED = {"model.attention": "kernels.attention"}


def _join_union_branches(errors: list[dict], root=None) -> list[dict]:
    """One error per key: pydantic reports a value that fits no member of a union (``int |
    Literal["auto"]``) once per member, its loc ending in the member's tag (``int``,
    ``literal['auto']``); those become one error at the key, their messages joined by "or"."""
    out: list[dict] = []
    by_key: dict[tuple, dict] = {}
    for e in errors:
        loc = tuple(str(p) for p in e["loc"])
        parent = _schema_at(list(loc[:-2]), root) if len(loc) >= 2 else None
        hints = _hints(parent) if parent is not None else {}
        is_branch = (parent is not None and not loc[-1].isdigit() and loc[-2] in hints
                     and _dataclass_in(hints[loc[-2]]) is None)
        if not is_branch:
            out.append(e)
            continue
        if loc[:-1] in by_key:
            first = by_key[loc[:-1]]
            first["msg"] = f"{first['msg']}, or {e['msg'][0].lower() + e['msg'][1:]}"
            continue
        by_key[loc[:-1]] = {**e, "loc": loc[:-1]}
        out.append(by_key[loc[:-1]])
    return out


def _describe(e: dict, origin: dict[str, str], default_file: str, root=None) -> str:
    loc = [str(p) for p in e["loc"]]
    key = ".".join(loc)
    where = _where(key, origin, default_file)
    if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        parent = _schema_at(loc[:-1], root)
        allowed = [f.name for f in fields(parent)] if parent else []
        near = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"allowed: {', '.join(allowed)}"
        if key in _MOVED:
            hint = f"it moved to {_MOVED[key]}"
        return f"{where}: unknown key '{key}': {hint}"
    value = e.get("input")
    if e["type"] == "missing":
        return f"{where}: {key} is required"
    msg = e["msg"]
    msg = msg[0].lower() + msg[1:]
    msg = msg.replace("input should be", "must be")
    return f"{where}: {key} = {_short(value)}: {msg}"


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _hints(cls) -> dict[str, Any]:
    """Field name -> resolved annotation of a schema class (its own module's names)."""
    return typing.get_type_hints(cls)


def _schema_at(loc: list[str], root=None):
    cls = root or Recipe
    for part in loc:
        if part.isdigit():
            continue
        hints = _hints(cls)
        if part not in hints:
            return None
        nxt = _dataclass_in(hints[part])
        if nxt is None:
            return None
        cls = nxt
    return cls


def _dataclass_in(annotation):
    """The schema class inside an annotation such as ``list[SourceConfig]``."""
    if getattr(annotation, "__origin__", None) is Literal:  # its args are values, not types
        return None
    if is_dataclass(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _where(key: str, origin: dict[str, str], default_file: str) -> str:
    """The file (or the command line) that set `key` or its nearest parent."""
    parts = key.split(".")
    while parts:
        probe = ".".join(parts)
        if probe in origin:
            return origin[probe]
        for k in origin:  # a parent key whose children were set
            if k.startswith(probe + "."):
                return origin[k]
        parts.pop()
    return default_file


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping.

    PyYAML (like the YAML 1.1 loaders of most languages) silently keeps the
    last of two equal keys, so a second ``train:`` block would replace the
    first one whole. A ``<<:`` merge key is not a repeat: keys written beside
    it override the merged ones, as YAML intends.
    """

    def construct_document(self, node):
        found: list[tuple[str, int, int]] = []
        self._find_duplicates(node, (), found)
        if found:
            raise DuplicateKeyError(sorted(found, key=lambda f: f[2]))
        return super().construct_document(node)

    def _find_duplicates(self, node, path: tuple[str, ...], found: list, seen_nodes: set | None = None,
                         within: frozenset = frozenset()) -> None:
        # An alias is the anchored node itself: each node is looked at once (nested aliases grew
        # exponentially), and one inside itself (`a: &a [*a]`, a recursive anchor) is refused: it
        # recursed without end here and in every walk of the tree after.
        seen_nodes = set() if seen_nodes is None else seen_nodes
        if id(node) in within:
            raise yaml.composer.ComposerError(None, None, "an alias inside the node it names (a recursive "
                                              "anchor); a recipe is a tree", node.start_mark)
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        within = within | {id(node)}
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key_node.start_mark.line
                key = (self.construct_object(key_node, deep=True)
                       if isinstance(key_node, yaml.ScalarNode) else key_node.start_mark.index)
                try:
                    if key in seen:
                        found.append((".".join((*path, str(key))), seen[key] + 1, line + 1))
                    seen.setdefault(key, line)
                except TypeError:  # an unhashable key: the schema refuses it later
                    pass
                self._find_duplicates(value_node, (*path, str(key)), found, seen_nodes, within)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._find_duplicates(item, (*path, str(i)), found, seen_nodes, within)


# YAML 1.2 reads `1e-5`, `5e8` and `1.0e6` as numbers; PyYAML keeps YAML 1.1, where a float needs a
# dot and a signed exponent, so they were strings: `rms_norm_eps: 1e-05` copied from a config.json
# reached transformers as '1e-05' (a traceback), `reduce_bucket_size: 5e8` as DeepSpeed's docs write
# it was refused (LLaMA-Factory#4014 met the same). This resolver (the YAML 1.2 core schema's float
# forms with an exponent) runs after PyYAML's own int and float ones.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+|[-+]?\.[0-9][0-9_]*[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))


class DuplicateKeyError(yaml.YAMLError):
    """Keys given twice in one YAML mapping: (dotted key, first line, repeated line), 1-based."""

    def __init__(self, found: list[tuple[str, int, int]]):
        self.found = found
        super().__init__("; ".join(f"duplicate key '{k}' on lines {a} and {b}" for k, a, b in found))


def read_yaml(path: str | os.PathLike, text: str | None = None) -> Any:
    """The YAML document of `path` (or `text`, named `path` in errors), refusing repeated keys.

    Every YAML file medtune reads goes through here: recipes and their bases,
    data and evaluation recipes. Raises `RecipeError`, one line per problem,
    each naming the file: ``FILE:9: duplicate key 'train' (first on line 2):
    YAML keeps only the last; give it once`` or ``FILE:LINE:COL: bad YAML: ...``.
    """
    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except DuplicateKeyError as err:
        raise RecipeError([f"{path}:{again}: duplicate key '{key}' (first on line {first}): YAML "
                           "keeps only the last; give it once" for key, first, again in err.found]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError([f"{path}{at}: bad YAML: {problem}"]) from None


# Keys whose values are file paths, resolved against the file that sets them.
_PATH_KEYS = ("model.name_or_path", "model.tokenizer", "zero.deepspeed_config", "data.cache_dir",
              "train.eval_tasks", "data.chat_template")
# Source formats whose path may be a hub id (read through `datasets`).
_HUB_FORMATS = ("hub", "messages", "sharegpt", "prompt_completion")


def _load_tree(path: Path, chain: tuple[Path, ...], resolve_paths, noun: str) -> tuple[dict, dict[str, str]]:
    path = path.resolve() if path.exists() else path
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError([f"{chain[-1]}: base: cycle {cycle}"])
    if not path.is_file():
        where = f"{chain[-1]}: base" if chain else str(path)
        raise RecipeError([f"{where}: {noun} file {path} does not exist"])
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise RecipeError([f"{path}: a{'n' if noun[0] in 'aeiou' else ''} {noun} is a mapping of sections, "
                           f"got {type(raw).__name__}"])
    bases = raw.pop("base", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError([f"{path}: base = {_short(bases)}: must be a path or a list of paths"])
    tree: dict = {}
    origin: dict[str, str] = {}
    for base in bases:
        base_path = _find_base(base, path.parent)
        sub, sub_origin = _load_tree(base_path, (*chain, path), resolve_paths, noun)
        _merge(tree, sub)
        origin.update(sub_origin)
    resolve_paths(raw, path.parent)
    _merge(tree, raw)
    for key in _leaf_keys(raw):
        origin[key] = str(path)
    return tree, origin


def _find_base(name: str, here: Path) -> Path:
    candidate = (here / name).expanduser()
    if candidate.exists():
        return candidate
    fallback = RECIPES_ROOT / name
    return fallback if fallback.exists() else candidate


def _resolve_paths(raw: dict, here: Path) -> None:
    for key in _PATH_KEYS:
        section, _, leaf = key.partition(".")
        block = raw.get(section)
        if isinstance(block, dict) and isinstance(block.get(leaf), str):
            model_key = leaf in ("name_or_path", "tokenizer")
            block[leaf] = _resolve(block[leaf], here, must_be_local=not model_key, partial=model_key)
    data = raw.get("data")
    validation = data.get("validation") if isinstance(data, dict) else None
    for block in (data, validation):
        if isinstance(block, dict) and isinstance(block.get("sources"), list):
            for src in block["sources"]:
                _resolve_source(src, here)


def _resolve_source(src, here: Path) -> None:
    """Make a data source's `path` and instruction file (a value with "/" or ".") absolute, in place."""
    if isinstance(src, dict) and isinstance(src.get("path"), str):
        src["path"] = _resolve(src["path"], here, must_be_local=src.get("format") not in _HUB_FORMATS)
    spec = src.get("instructions") if isinstance(src, dict) else None
    if isinstance(spec, str) and ("/" in spec or "." in spec):  # a text file, not a pool name
        src["instructions"] = _resolve(spec, here, must_be_local=True)


def _resolve(value: str, here: Path, must_be_local: bool, partial: bool = False) -> str:
    """A relative path is taken relative to the recipe; a hub id is kept as is.

    `partial`: an ``a/b`` whose ``a`` is a directory beside the recipe is a path
    there (a model directory not written yet is then refused, not looked up on the hub).
    """
    value = os.path.expandvars(value)
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    local = here / p
    partly_here = partial and len(p.parts) > 1 and (here / p.parts[0]).is_dir()
    # a glob of local files, or a table file (never a hub id)
    pattern = any(c in value for c in "*?[") or value.lower().endswith(
        (".json", ".jsonl", ".ndjson", ".parquet", ".csv", ".tsv", ".arrow"))
    if must_be_local or value.startswith(("./", "../")) or local.exists() or partly_here or pattern:
        return str(local.resolve())
    return value


def _merge(dst: dict, src: dict) -> None:
    """Deep-merge mappings; lists and scalars from `src` replace those in `dst`."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def _leaf_keys(tree: dict | list, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of `tree`, list items by index (``data.sources.0.path``)."""
    out = []
    for k, v in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)) and v:
            out += _leaf_keys(v, key + ".")
        else:
            out.append(key)
    return out


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError([f"{COMMAND_LINE}: override '{item}' must look like section.key=value"])
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader) if text else None
    except DuplicateKeyError as err:
        raise RecipeError([f"{COMMAND_LINE}: override '{item}': {err}"]) from None
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(tree: dict, key: str, value: Any, item: str = "") -> None:
    """``tree[a][b]...[leaf] = value`` for ``a.b...leaf``; missing mappings are created, a numeric
    part indexes an existing list (`RecipeError` past its end)."""
    *parents, leaf = key.split(".")
    node: Any = tree
    for i, part in enumerate([*parents, leaf]):
        last = i == len(parents)
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                at = ".".join(key.split(".")[:i])
                size = (f"a list of {len(node)} item{'s' if len(node) != 1 else ''}; index it with "
                        f"0..{len(node) - 1}" if node else "an empty list: set it whole")
                raise RecipeError([f"{COMMAND_LINE}: override '{item or key}': {at} is {size}"])
            part = int(part)
        elif not last and not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        if last:
            node[part] = value
        else:
            node = node[part]


def to_dict(recipe) -> dict:
    """Plain JSON-able data of a recipe (or any schema object: an evaluation recipe), tuples as
    lists, for writing it (pydantic's ``TypeAdapter.dump_python(mode="json")``)."""
    from pydantic import TypeAdapter

    return TypeAdapter(type(recipe)).dump_python(recipe, mode="json")


def dump(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the resolved recipe atomically; `load` of the result gives the same recipe."""
    from medtune.base.fsutil import write_atomic

    write_atomic(Path(path), yaml.safe_dump(to_dict(recipe), sort_keys=False))
