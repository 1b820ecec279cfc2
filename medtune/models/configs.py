"""A model's transformers config, without weights: from the recipe, the hub cache or medtune's published numbers.

Torch-free: the launching process, the planner, the data preparation (for
the context length) and every rank read the config through here.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medtune.config import ModelConfig


def hf_config(model: ModelConfig, tokenizer=None, stop_ids=()):
    """The model's transformers config, without loading any weights.

    With a `tokenizer`, an inline config's bos/eos/pad ids are the
    tokenizer's (eos: with the template's `stop_ids`, see
    `special_token_ids`): a family's defaults (Gemma:
    bos/eos/pad = 2/1/0) would otherwise name other tokens than the data's,
    and the embedding row of a wrong pad id would never train.
    """
    from transformers import AutoConfig

    if model.config is not None:
        cfg = dict(model.config)
        if tokenizer is not None:
            ids = special_token_ids(tokenizer, stop_ids)
            rows = cfg.get("vocab_size")
            if isinstance(rows, int) and isinstance(ids["pad_token_id"], int) and ids["pad_token_id"] >= rows:
                # an added pad token: its row exists only after `medtune.engine.model.grow_vocab`
                # (which sets the id then); an embedding's padding_idx must lie inside it
                ids["pad_token_id"] = None
            cfg.update(ids)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return AutoConfig.from_pretrained(model.name_or_path, revision=model.revision,
                                      trust_remote_code=model.trust_remote_code)


def head_dim(cfg) -> int:
    """Size of one attention head of a transformers config."""
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def special_token_ids(tokenizer, stop_ids=()) -> dict:
    """The ``bos_token_id``/``eos_token_id``/``pad_token_id`` a config and generation config carry.

    bos and pad are the tokenizer's (``None`` where it has none). eos is the
    tokenizer's EOS followed by every other id in `stop_ids` (the tokens that
    end a trained answer, `medtune.data.tokenize.stop_token_ids`): an int when
    that is one id, a list otherwise, the form transformers' `GenerationConfig`
    takes for several stop tokens (as Llama 3.1 Instruct's export writes it).
    """
    eos = list(dict.fromkeys(i for i in (tokenizer.eos_token_id, *stop_ids) if i is not None))
    return {"bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": (eos[0] if len(eos) == 1 else eos) if eos else None,
            "pad_token_id": tokenizer.pad_token_id}


def load_config(model):
    """The model's config: the real one when reachable, else the published numbers medtune keeps."""
    from transformers import AutoConfig

    from medtune.models.families import PUBLISHED

    name = model.name_or_path
    if model.config is not None or Path(name).is_dir() or name not in PUBLISHED:
        return hf_config(model)
    try:  # a hub id: the cached config.json if there is one, without asking the network
        return AutoConfig.from_pretrained(name, revision=model.revision, local_files_only=True)
    except OSError:
        cfg = dict(PUBLISHED[name])
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
