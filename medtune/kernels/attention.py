"""Attention over packed rows, each sample kept to itself.

A packed row holds samples back to back. The collator computes, once per
batch and on the host, where each sample starts (``cu_seqlens``) and the
longest sample (``max_seqlen``)::

    row          a0 a1 a2 b0 b1
    position_ids  0  1  2  0  1
    cu_seqlens   [0, 3, 5]          max_seqlen 3

and every layer's attention reads them from the model call's keyword
arguments (``cu_seq_lens_q``/``cu_seq_lens_k`` on the device,
``max_length_q``/``max_length_k`` as ints, ``medtune_bounds`` as host ints),
so no layer asks the device for a length.

Backends medtune registers with transformers' ``AttentionInterface`` (the
model code is not patched; its attention calls the registered function):

- ``flash_attn``: ``flash_attn.flash_attn_varlen_func`` (CUDA, bf16/fp16).
- ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn``, the
  FlashAttention varlen kernel inside PyTorch (CUDA, bf16/fp16).
- ``sdpa_varlen``: PyTorch's ``scaled_dot_product_attention`` once per
  sample, causal: any device and dtype, and no work across samples
  (transformers' own sdpa path builds a dense [L, L] mask for a packed row
  and pays the quadratic cost of the whole row).

``sdpa``, ``eager`` and ``flex_attention`` are transformers' own paths: they
isolate samples from ``position_ids`` only with no attention mask and no KV
cache, which is how medtune calls the model. ``auto`` picks the first varlen
backend that runs here (`resolve`).
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VARLEN = ("flash_attn", "torch_varlen", "sdpa_varlen")
HF_NATIVE = ("sdpa", "eager", "flex_attention")
_PREFIX = "medtune_"


@dataclass(frozen=True)
class Choice:
    backend: str
    """One of `VARLEN` or `HF_NATIVE`."""
    why: str
    """What decided it, for the log."""

    @property
    def varlen(self) -> bool:
        return self.backend in VARLEN

    @property
    def implementation(self) -> str:
        """The ``attn_implementation`` name to give transformers."""
        if self.varlen:
            register()
            return _PREFIX + self.backend
        return self.backend


def unavailable(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> str | None:
    """Why `backend` cannot run for this device, dtype and head size; None when it can."""
    if backend in ("sdpa_varlen", *HF_NATIVE):
        return None
    if device.type != "cuda":
        return "needs a CUDA GPU"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"needs bf16 or fp16, not {str(dtype).removeprefix('torch.')}"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "needs an Ampere or newer GPU (compute capability 8.0)"
    if head_dim > 256 or head_dim % 8:
        return f"needs a head size that is a multiple of 8 up to 256, not {head_dim}"
    if backend == "flash_attn" and importlib.util.find_spec("flash_attn") is None:
        return "the flash-attn package is not installed (pip install -e '.[flash]' --no-build-isolation)"
    if backend == "torch_varlen" and _torch_varlen() is None:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn"
    return None


def resolve(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> Choice:
    """The backend to use; a named one that cannot run here raises `ValueError` saying why."""
    if requested != "auto":
        reason = unavailable(requested, device, dtype, head_dim)
        if reason:
            raise ValueError(f"kernels.attention = {requested}: {reason}; use kernels.attention=auto "
                             "to take the best backend this machine has")
        return Choice(requested, "set in the recipe")
    skipped = []
    for backend in VARLEN:
        reason = unavailable(backend, device, dtype, head_dim)
        if reason is None:
            why = "auto" + (f": {'; '.join(skipped)}" if skipped else ": the fastest here")
            return Choice(backend, why)
        skipped.append(f"{backend} {reason}")
    raise AssertionError("sdpa_varlen runs everywhere")


def varlen_kwargs(cu_seqlens: torch.Tensor, max_seqlen: int, device) -> dict:
    """Keyword arguments of a model call that every varlen backend reads."""
    cu = cu_seqlens.to(device=device, dtype=torch.int32, non_blocking=True)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_seqlen,
            "max_length_k": max_seqlen, "medtune_bounds": tuple(cu_seqlens.tolist())}


# --------------------------------------------------------------------------
# The attention functions transformers calls: query [1, H, L, D], key and
# value [1, H_kv, L, D]; they return ([1, L, H, D], None).
# --------------------------------------------------------------------------

def _sdpa_varlen(module, query, key, value, attention_mask, dropout: float = 0.0,
                 scaling: float | None = None, medtune_bounds: tuple[int, ...] | None = None,
                 sliding_window: int | None = None, **_) -> tuple[torch.Tensor, None]:
    _check_packed(medtune_bounds is not None, attention_mask)
    bounds = medtune_bounds
    _check_window(sliding_window, bounds)
    gqa = query.shape[1] != key.shape[1]
    parts = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b],
                                            dropout_p=dropout, is_causal=True, scale=scaling,
                                            enable_gqa=gqa)
             for a, b in zip(bounds, bounds[1:])]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2), None


def _flash_attn(module, query, key, value, attention_mask, dropout: float = 0.0,
                scaling: float | None = None, cu_seq_lens_q=None, max_length_q: int | None = None,
                sliding_window: int | None = None, **_) -> tuple[torch.Tensor, None]:
    from flash_attn import flash_attn_varlen_func

    _check_packed(cu_seq_lens_q is not None, attention_mask)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [L, H, D]
    window = (sliding_window - 1, 0) if sliding_window else (-1, -1)
    out = flash_attn_varlen_func(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q,
                                 dropout_p=dropout, softmax_scale=scaling, causal=True,
                                 window_size=window)
    return out.unsqueeze(0), None


def _torch_varlen_attn(module, query, key, value, attention_mask, dropout: float = 0.0,
                       scaling: float | None = None, cu_seq_lens_q=None, max_length_q: int | None = None,
                       sliding_window: int | None = None, **_) -> tuple[torch.Tensor, None]:
    if dropout:
        raise ValueError("kernels.attention = torch_varlen has no attention dropout; use flash_attn")
    _check_packed(cu_seq_lens_q is not None, attention_mask)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    window = (sliding_window - 1, 0) if sliding_window else (-1, 0)  # (-1, 0): causal
    out = _call_varlen(_torch_varlen(), q, k, v, cu_seq_lens_q, max_length_q, scaling, window)
    return out.unsqueeze(0), None


def _call_varlen(fn, q, k, v, cu_seqlens, max_seqlen: int, scale, window: tuple[int, int]):
    """``varlen_attn`` called with only the keywords this torch's version takes.

    q ``[L, H, D]``, k and v ``[L, H_kv, D]``; returns ``[L, H, D]``. The
    function grew across releases: ``is_causal`` (2.9) became ``window_size``
    (``(-1, 0)`` is causal), ``enable_gqa`` came later still (torch 2.13 has
    both; the lent H200's torch 2.11 may not). Without ``enable_gqa`` the KV
    heads are repeated to the query heads; without ``window_size`` a sliding
    window raises `ValueError`.
    """
    params = _parameters(fn)
    kwargs = {"scale": scale} if "scale" in params else {}
    if scale is not None and "scale" not in params and scale != q.shape[-1] ** -0.5:
        raise ValueError(f"torch {torch.__version__}: varlen_attn takes no scale; use sdpa_varlen")
    if "window_size" in params:
        kwargs["window_size"] = window
    elif window != (-1, 0):
        raise ValueError(f"torch {torch.__version__}: varlen_attn has no sliding window; use flash_attn")
    else:
        kwargs["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return fn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, **kwargs)


@functools.lru_cache(maxsize=4)
def _parameters(fn) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def _check_packed(has_bounds: bool, attention_mask) -> None:
    """A varlen backend needs the row's sample bounds and no attention mask."""
    if not has_bounds:
        raise ValueError("a medtune varlen attention backend was called without the packed row's "
                         "sample bounds (call the model through medtune's trainer, or use sdpa)")
    if attention_mask is not None:
        raise ValueError("varlen attention takes packed rows without an attention mask")


def _check_window(sliding_window: int | None, bounds: tuple[int, ...]) -> None:
    if sliding_window and max(b - a for a, b in zip(bounds, bounds[1:])) > sliding_window:
        raise ValueError(f"a sample is longer than the model's sliding window ({sliding_window}): "
                         "sdpa_varlen attends to the whole sample; use flash_attn or torch_varlen")


def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


_FUNCTIONS = {"flash_attn": _flash_attn, "torch_varlen": _torch_varlen_attn, "sdpa_varlen": _sdpa_varlen}


def register() -> None:
    """Make ``medtune_<backend>`` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    for name, fn in _FUNCTIONS.items():
        AttentionInterface.register(_PREFIX + name, fn)
