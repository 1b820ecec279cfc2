"""Build the Hugging Face model directly into ZeRO-3 partitions."""
from __future__ import annotations

import torch

from medtune.config import ModelConfig
from medtune.models.configs import hf_config


def build(model: ModelConfig, ds_config: dict, dtype: torch.dtype, attn_implementation: str,
          tokenizer=None, stop_ids=()):
    """The model, partitioned across ranks as it is created.

    With an `HfDeepSpeedConfig` alive, transformers creates every parameter
    inside `deepspeed.zero.Init`, so no rank ever holds the whole model (and
    ``from_pretrained`` loads each weight into its shards).
    `attn_implementation` is a name transformers knows (its own or one
    `medtune.kernels.attention` registered). `tokenizer` and `stop_ids` set
    an inline config's special token ids (`hf_config`).
    """
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    handle = HfDeepSpeedConfig(ds_config)  # noqa: F841 (transformers keeps only a weak reference)
    common = dict(attn_implementation=attn_implementation, dtype=dtype)
    if model.config is not None:
        net = AutoModelForCausalLM.from_config(hf_config(model, tokenizer, stop_ids), **common)
    else:
        net = AutoModelForCausalLM.from_pretrained(model.name_or_path, revision=model.revision,
                                                   trust_remote_code=model.trust_remote_code, **common)
    # Only construction needs zero.Init; left on, every later from_config
    # (a meta model for checking an export on rank 0) would become a
    # collective and hang.
    unset_hf_deepspeed_config()
    # Packed rows are isolated only without a KV cache (with it, transformers
    # lets the samples of a row attend to each other).
    net.config.use_cache = False
    if model.gradient_checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    net.train()
    return net


def param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, norms and other vectors."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        ndim = len(getattr(p, "ds_shape", p.shape))  # ZeRO-3 params are empty shells
        (decay if ndim >= 2 and not name.endswith(".bias") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
