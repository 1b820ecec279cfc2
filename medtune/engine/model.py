"""Build the Hugging Face model directly into ZeRO-3 partitions."""
from __future__ import annotations

import torch

from medtune.config import ModelConfig
from medtune.models.configs import hf_config


def grow_vocab(net, rows: int, tokenizer=None) -> None:
    """Grow `net`'s input embedding and output layer to `rows` rows, each new row the mean of the old ones.

    transformers' ``resize_token_embeddings(rows, mean_resizing=True)``
    (Hewitt 2021, "Initializing new word embeddings for pretrained language
    models"): new rows are drawn from N(mean, 1e-9 x covariance) of the old
    rows, i.e. the mean to about 3e-5 of their spread, which keeps every old
    token's probability as it was. Under ZeRO-3 (an `HfDeepSpeedConfig`
    alive) it gathers the old weights on every rank and leaves the grown
    layers as whole tensors on every rank; ``deepspeed.initialize`` then
    broadcasts rank 0's copy and partitions them (DeepSpeed's
    ``_convert_to_zero_parameters``), so every rank holds its shard of the
    same weights. Both layers are grown, tied or not; ``config.vocab_size``
    becomes `rows` and, with a `tokenizer`, ``config.pad_token_id`` its pad id.
    """
    net.resize_token_embeddings(rows, mean_resizing=True)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        net.config.pad_token_id = tokenizer.pad_token_id


def build(model: ModelConfig, ds_config: dict, dtype: torch.dtype, attn_implementation: str,
          tokenizer=None, stop_ids=(), vocab_rows: int | None = None):
    """The model, partitioned across ranks as it is created.

    With an `HfDeepSpeedConfig` alive, transformers creates every parameter
    inside `deepspeed.zero.Init`, so no rank ever holds the whole model (and
    ``from_pretrained`` loads each weight into its shards).
    `attn_implementation` is a name transformers knows (its own or one
    `medtune.kernels.attention` registered). `tokenizer` and `stop_ids` set
    an inline config's special token ids (`hf_config`). `vocab_rows` above
    the model's rows grows its embedding and output layers (`grow_vocab`),
    still under ZeRO-3 and on every rank (a collective).
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
    if vocab_rows is not None and vocab_rows > net.config.get_text_config().vocab_size:
        grow_vocab(net, vocab_rows, tokenizer)
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
