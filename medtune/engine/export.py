"""Hugging Face exports from ZeRO-3 shards, verified after every write.

The export directory holds ``config.json``, ``generation_config.json`` (both
with the tokenizer's special token ids and the template's stop tokens,
`write_hf_dir`), the tokenizer and safetensors
weights (sharded with an index when large) that
``AutoModelForCausalLM.from_pretrained`` loads. After writing, `verify`
reads the files back and checks every tensor the config implies is there,
with the config's shape and non-zero size: a ZeRO-3 export of empty
placeholders (the 1 MB "model") is refused, not shipped.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from medtune.base.errors import UserError
from medtune.models.configs import special_token_ids

HF_DIR = "hf"  # RUN_DIR/hf: config, generation config and tokenizer, written at start


class ExportError(UserError):
    """An export that would not load, or would load as the wrong model."""


def write_hf_dir(hf_dir: Path, net, tokenizer, stop_ids=()) -> None:
    """``config.json``, ``generation_config.json`` and the tokenizer, as every export of the run carries them.

    Both configs take their special token ids from the tokenizer and the
    template (`special_token_ids`), so plain ``generate`` on the export
    stops where the model was trained to stop, whatever ids the model's own
    config held (an inline Gemma config defaults to bos/eos/pad = 2/1/0).
    The KV cache, off for training, is on again for generation.
    """
    import copy

    from transformers import GenerationConfig

    hf_dir.mkdir(parents=True, exist_ok=True)
    ids = special_token_ids(tokenizer, stop_ids)
    cfg = copy.deepcopy(net.config)
    cfg.use_cache = True
    for key, value in ids.items():
        setattr(cfg, key, value)
    cfg.save_pretrained(hf_dir)
    gen = (copy.deepcopy(net.generation_config) if getattr(net, "generation_config", None) is not None
           else GenerationConfig.from_model_config(cfg))
    for key, value in ids.items():
        setattr(gen, key, value)
    gen.save_pretrained(hf_dir)
    save_for_generation(tokenizer, hf_dir)


def save_for_generation(tokenizer, out_dir: Path) -> None:
    """Save `tokenizer` (added tokens included) as a batched generator wants it.

    It pads on the left (a decoder-only model continues the last token of
    each row) and has a pad token: its own (``model.pad_token``), else its
    EOS, so ``tokenizer(prompts, padding=True)`` and a ``pipeline`` with
    ``batch_size`` work. EOS as the pad is used for padding prompts only:
    the configs keep the training pad id (none), and training never pads
    with a label, so the model still learns to end its answers with EOS.
    The training tokenizer itself is not changed.
    """
    import copy

    saved = copy.deepcopy(tokenizer)
    saved.padding_side = "left"
    if saved.pad_token is None and saved.eos_token is not None:
        saved.pad_token = saved.eos_token
    saved.save_pretrained(out_dir)


def gather_and_save(engine, run_dir: Path, out_dir: Path, rank: int) -> None:
    """Gather the ZeRO-3 shards to rank 0 and write a verified export (a collective)."""
    import deepspeed.comm as dist

    from medtune.engine import ds_compat

    state = ds_compat.consolidated_16bit_state_dict(engine)  # every rank must call it
    if rank == 0:
        write(state, engine.module, run_dir / HF_DIR, out_dir)
    dist.barrier()


def export_checkpoint(ckpt: Path, run_dir: Path, out_dir: Path) -> None:
    """Export a saved DeepSpeed checkpoint in one process (no GPUs or ranks needed)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    net = meta_model(run_dir / HF_DIR)
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt.parent), tag=ckpt.name)
    dtype = net.config.dtype if isinstance(net.config.dtype, torch.dtype) else torch.float32
    state = {k: v.to(dtype) for k, v in state.items()}
    write(state, net, run_dir / HF_DIR, out_dir)


def meta_model(hf_dir: Path):
    """The model of `hf_dir`'s config with no storage: names, shapes and tied weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(hf_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def write(state: dict[str, torch.Tensor], net, hf_dir: Path, out_dir: Path) -> None:
    """Write config, tokenizer and weights to a temporary sibling, verify, then rename.

    An existing export is replaced only by a verified one.
    """
    from huggingface_hub import save_torch_state_dict

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for f in hf_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        save_torch_state_dict(state, tmp, max_shard_size="5GB",
                              shared_tensors_to_discard=_tied_copies(state, net))
        verify(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tied_copies(state: dict[str, torch.Tensor], net) -> list[str]:
    """Names transformers re-ties on load (e.g. ``lm_head.weight``) that share storage."""
    tied = getattr(net, "all_tied_weights_keys", None) or {}
    return [t for t, s in tied.items() if t in state and s in state and state[t] is state[s]]


def verify(export_dir: Path) -> None:
    """Raise `ExportError` unless every expected tensor is present, shaped right and non-empty."""
    from safetensors import safe_open

    files = sorted(export_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{export_dir}: no safetensors weights were written")
    index = export_dir / "model.safetensors.index.json"
    if index.exists():
        listed = set(json.loads(index.read_text())["weight_map"].values())
        missing_files = listed - {f.name for f in files}
        if missing_files:
            raise ExportError(f"{export_dir}: index names missing shards {sorted(missing_files)}")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    net = meta_model(export_dir)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    tied = getattr(net, "all_tied_weights_keys", None) or {}
    problems = []
    for key, shape in expected.items():
        if key not in shapes:
            if key in tied and tied[key] in shapes:
                continue
            problems.append(f"{key} missing")
        elif shapes[key] != shape:
            problems.append(f"{key} has shape {list(shapes[key])}, config says {list(shape)}")
    for key, shape in shapes.items():
        if key not in expected:
            problems.append(f"{key} is not a tensor of this model")
        elif 0 in shape:
            problems.append(f"{key} is empty (shape {list(shape)}): a ZeRO-3 placeholder was saved")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ExportError(f"{export_dir}: export failed verification: {shown}")
