"""Tiny configs of the model families medtune tests, and published configs of the models its recipes name.

Each family maps to a small spec with a shrunken config that every test and
CPU smoke run builds from scratch, so each family is trained for real
without downloading weights. The list is not a gate: a model of any
causal-LM class transformers has trains without being listed here. ``PUBLISHED`` holds the
architecture numbers of the hub models our recipes use, so ``medtune plan``
works offline (it prefers the real ``config.json`` when it can load one).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    model_type: str
    """transformers' ``model_type`` of the family."""
    tiny: dict = field(default_factory=dict)
    """A shrunken config (2 layers, hidden 64) built from scratch for CPU runs."""


_TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, vocab_size=1000,
             tie_word_embeddings=False)

_HEAD16 = dict(head_dim=16)
_WINDOW = 8
"""Sliding window of the tiny windowed families: tests pack samples longer than it."""

FAMILIES: dict[str, Family] = {
    "llama": Family("llama", {"model_type": "llama", **_TINY}),
    "mistral": Family("mistral", {"model_type": "mistral", **_TINY, "sliding_window": _WINDOW}),
    "qwen2": Family("qwen2", {"model_type": "qwen2", **_TINY}),
    "qwen3": Family("qwen3", {"model_type": "qwen3", **_TINY, **_HEAD16}),
    "phi3": Family("phi3", {"model_type": "phi3", **_TINY, "pad_token_id": 0, "bos_token_id": 1,
                            "eos_token_id": 2}),
    # attention and final-logit soft-capping, sliding window on every other layer
    "gemma2": Family("gemma2", {"model_type": "gemma2", **_TINY, **_HEAD16, "query_pre_attn_scalar": 16,
                                "sliding_window": _WINDOW, "attn_logit_softcapping": 50.0,
                                "final_logit_softcapping": 30.0}),
    # local (sliding) and global layers, text only
    "gemma3": Family("gemma3_text", {"model_type": "gemma3_text", **_TINY, **_HEAD16,
                                     "query_pre_attn_scalar": 16, "sliding_window": _WINDOW,
                                     "layer_types": ["sliding_attention", "full_attention"]}),
    # embedding, residual, attention and logit multipliers (logits / logits_scaling)
    "granite": Family("granite", {"model_type": "granite", **_TINY, "embedding_multiplier": 12.0,
                                  "residual_multiplier": 0.22, "attention_multiplier": 0.0078125,
                                  "logits_scaling": 8.0}),
}
"""Tiny configs of the families medtune's tests train. Not a closed list: ``model.family``
is optional and any causal LM transformers has trains (`medtune.config`)."""

# From each model's config.json on the Hugging Face hub.
PUBLISHED: dict[str, dict] = {
    "meta-llama/Llama-2-7b-hf": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                                     num_hidden_layers=32, num_attention_heads=32,
                                     num_key_value_heads=32, vocab_size=32000,
                                     max_position_embeddings=4096, tie_word_embeddings=False),
    "meta-llama/Llama-2-13b-hf": dict(model_type="llama", hidden_size=5120, intermediate_size=13824,
                                      num_hidden_layers=40, num_attention_heads=40,
                                      num_key_value_heads=40, vocab_size=32000,
                                      max_position_embeddings=4096, tie_word_embeddings=False),
    "meta-llama/Llama-3.1-8B": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                    vocab_size=128256, max_position_embeddings=131072,
                                    rope_theta=500000.0, tie_word_embeddings=False),
    "meta-llama/Llama-3.2-1B": dict(model_type="llama", hidden_size=2048, intermediate_size=8192,
                                    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                    vocab_size=128256, max_position_embeddings=131072,
                                    rope_theta=500000.0, tie_word_embeddings=True),
    "mistralai/Mistral-7B-v0.3": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                                      num_hidden_layers=32, num_attention_heads=32,
                                      num_key_value_heads=8, vocab_size=32768,
                                      max_position_embeddings=32768, sliding_window=None,
                                      tie_word_embeddings=False),
    "Qwen/Qwen2.5-7B": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                            num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                            vocab_size=152064, max_position_embeddings=131072,
                            tie_word_embeddings=False),
}
PUBLISHED["meta-llama/Llama-2-7b-chat-hf"] = PUBLISHED["meta-llama/Llama-2-7b-hf"]
PUBLISHED["meta-llama/Llama-2-13b-chat-hf"] = PUBLISHED["meta-llama/Llama-2-13b-hf"]
PUBLISHED["meta-llama/Llama-3.1-8B-Instruct"] = PUBLISHED["meta-llama/Llama-3.1-8B"]


def shrunk(cfg, *, hidden: int, heads: int, head_dim: int, vocab: int, intermediate: int | None = None,
           layers: int | None = None, **extra) -> dict:
    """`cfg` (a transformers config) as the keyword arguments of a tiny copy of its architecture.

    Every width shrinks to the numbers given (``intermediate`` defaults to
    `hidden`); grouped-query attention stays grouped (``heads // 2`` KV
    heads) and multi-head stays multi-head. The layer count and structure
    are kept unless `layers` is given, then a ``layer_types`` list is cut to
    match. Dtype, hub names and quantization are dropped; `extra` keys are
    set last. ``AutoConfig.for_model(**shrunk(cfg, ...))`` builds it. Used
    where medtune runs a model's own code to learn something about it: the
    communication simulator's call order (`medtune.planning.comm`), the chunked head's
    logit check (`medtune.kernels.loss`) and the start-up isolation probe
    (`medtune.kernels.isolation`).
    """
    d = cfg.to_dict()
    grouped = (d.get("num_key_value_heads") or d["num_attention_heads"]) < d["num_attention_heads"]
    d.update(hidden_size=hidden, intermediate_size=intermediate or hidden, num_attention_heads=heads,
             num_key_value_heads=heads // 2 if grouped else heads, head_dim=head_dim, vocab_size=vocab)
    if layers is not None:
        d["num_hidden_layers"] = min(layers, d.get("num_hidden_layers") or layers)
        if isinstance(d.get("layer_types"), list):
            d["layer_types"] = d["layer_types"][:d["num_hidden_layers"]]
    for key in ("torch_dtype", "dtype", "_name_or_path", "architectures", "transformers_version",
                "quantization_config", "auto_map"):
        d.pop(key, None)
    d.update(extra)
    return d
