"""Model FLOPs of a causal LM per sample and per pack, dense bf16 peaks, MFU.

The count is the usual one for training (forward + backward = 3 x forward,
2 FLOPs per multiply-add), made of two terms:

* linear: every matmul a token passes through, ``6 x weights`` per token.
  Per layer: q ``h*H*d``, k and v ``h*Hkv*d`` each, o ``H*d*h``, the gated
  MLP ``3*h*i``; plus ``lm_head`` ``h*V`` once. The input embedding is a
  lookup (no FLOPs) and norms are negligible, so neither is counted.
* attention: ``QK^T`` and ``AV`` of one sample of length ``L`` are
  ``2 * 2*L^2*H*d`` FLOPs per layer without a mask, half of it under the
  causal mask, times 3 for the backward: ``6 * layers * H*d * L^2``.
  Samples packed in one row never attend to each other, so a pack costs the
  sum of its samples.

Worked numbers, Llama-2-7B (h 4096, i 11008, 32 layers, 32 heads of 128,
vocabulary 32,000)::

    per layer   4*4096*4096 + 3*4096*11008        =   202,375,168 weights
    32 layers + lm_head 4096*32000                 = 6,607,077,376 weights
    linear_per_token = 6 * 6,607,077,376           = 3.96e10 FLOPs
    attention_coef   = 6 * 32 * 4096               = 786,432
    one 2,048-token sample: 3.96e10*2048 + 786,432*2048^2
                          = 8.119e13 + 3.30e12     = 8.45e13 FLOPs

(6.61e9 is the model's 6.74e9 parameters without its 131M-weight input
embedding and its norms.) At 2,048 tokens attention is 4% of a sample's
FLOPs for this model; for the tiny CPU Llama (h 64, 2 layers) it is more
than half, which is why packs are balanced on FLOPs rather than tokens.

This module imports nothing heavy: the config may be a transformers config
object or a plain mapping (``medtune.models.families.PUBLISHED`` entries).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# Dense (no structured sparsity) BF16 tensor-core peaks in TFLOPS, from NVIDIA's
# datasheets (A100, H100, H200), which quote sparse figures at twice these.
PEAK_TFLOPS: dict[str, float] = {
    "A100": 312.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
}


@dataclass(frozen=True)
class FlopModel:
    """Training FLOPs (forward + backward) of one causal LM, by sample length."""
    linear_per_token: int
    """6 x the weights of every matmul a token passes through (all layers and lm_head)."""
    attention_coef: int
    """6 x layers x heads x head_dim: a sample of L tokens costs ``attention_coef * L**2``
    in causal attention (QK^T and AV), forward and backward."""

    @classmethod
    def from_config(cls, config: Any) -> "FlopModel":
        """From a transformers config (or a mapping with the same keys)."""
        get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
        missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "vocab_size") if get(k) is None]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}: cannot count its FLOPs")
        h, i = int(get("hidden_size")), int(get("intermediate_size"))
        layers, heads = int(get("num_hidden_layers")), int(get("num_attention_heads"))
        kv_heads = int(get("num_key_value_heads") or heads)
        head_dim = int(get("head_dim") or h // heads)
        vocab = int(get("vocab_size"))
        attention = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h
        per_layer = attention + 3 * h * i  # q, k, v, o; gate, up, down
        return cls(linear_per_token=6 * (layers * per_layer + h * vocab),
                   attention_coef=6 * layers * heads * head_dim)

    @classmethod
    def from_model(cls, cfg: Any) -> "FlopModel":
        """From a transformers config's module tree: any causal LM transformers has.

        The linear term counts the weights of every ``nn.Linear`` (and GPT-2's
        ``Conv1D``) of the model built on the meta device, ``lm_head``
        included, so fused projections (Phi-3's ``qkv_proj``), ungated MLPs
        and extra projections are counted as they are. The attention term
        takes layers, heads and head size from the config (a sliding window
        makes long samples cheaper than this: the count is an upper bound).
        For the gated-MLP families `from_config` covers it gives the same
        numbers. Raises `ValueError`, one line, for what it cannot estimate: a
        mixture of experts (per-token FLOPs depend on the routing) or a config
        without attention heads.
        """
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.pytorch_utils import Conv1D

        get = lambda k, d=None: getattr(cfg, k, d)  # noqa: E731
        experts = [k for k in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
                   if (get(k) or 0) > 1]
        if experts:
            raise ValueError(f"model_type {get('model_type')} is a mixture of experts ({experts[0]} "
                             f"{get(experts[0])}): medtune does not estimate its FLOPs (they depend on "
                             "the routing); packs are balanced on tokens and no MFU is reported")
        if not get("num_attention_heads") or not get("num_hidden_layers"):
            raise ValueError(f"model_type {get('model_type')}: the config has no num_attention_heads or "
                             "num_hidden_layers, so medtune does not estimate its attention FLOPs")
        with torch.device("meta"):
            net = AutoModelForCausalLM.from_config(cfg)
        weights = 0
        for m in net.modules():
            if isinstance(m, (torch.nn.Linear, Conv1D)):
                weights += m.weight.numel()
        heads = int(get("num_attention_heads"))
        head_dim = int(get("head_dim") or get("hidden_size") // heads)
        return cls(linear_per_token=6 * weights, attention_coef=6 * int(get("num_hidden_layers")) * heads * head_dim)

    def sample(self, length: int) -> int:
        """FLOPs of one sample of `length` tokens (exact integer: every rank computes the same)."""
        return self.linear_per_token * length + self.attention_coef * length * length

    def pack(self, lengths: Iterable[int]) -> int:
        """FLOPs of one packed row: its samples never attend to each other."""
        return sum(self.sample(n) for n in lengths)


def peak_tflops(device_name: str) -> float | None:
    """Dense BF16 peak of a GPU named as ``torch.cuda.get_device_name`` does; None if unknown.

    >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("NVIDIA H100 PCIe")
    (989.0, 756.0)
    """
    name = device_name.lower()
    if "h200" in name:
        return PEAK_TFLOPS["H200"]
    if "h100" in name:
        if "pcie" in name:
            return PEAK_TFLOPS["H100 PCIe"]
        if "nvl" in name:
            return PEAK_TFLOPS["H100 NVL"]
        return PEAK_TFLOPS["H100 SXM"]
    if "a100" in name:
        return PEAK_TFLOPS["A100"]
    return None


def mfu(flops: float, seconds: float, devices: int, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the devices' dense peak.

    >>> round(mfu(8.45e13 * 8, 1.0, 8, 989.0), 4)   # one 2,048-token Llama-2-7B row/s per H100
    0.0854
    """
    if seconds <= 0 or devices < 1 or peak_tflops <= 0:
        raise ValueError(f"mfu needs seconds > 0, devices >= 1 and a peak > 0 "
                         f"(got {seconds}, {devices}, {peak_tflops})")
    return flops / (seconds * devices * peak_tflops * 1e12)
