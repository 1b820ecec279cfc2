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
  sample, causal (banded under a sliding window): any device and dtype, and
  no work across samples (transformers' own sdpa path builds a dense
  [L, L] mask for a packed row and pays the quadratic cost of the whole
  row). With soft-capping or sinks it runs transformers' eager math per
  sample instead.

Each backend honours every argument transformers passes (scaling, sliding
window, soft-capping, GQA, sinks) or refuses it in one line naming a backend
that can (`model_features`, `refusal`), before any rank starts. The names
registered with transformers (`REGISTERED`) contain neither "flash" nor
"sdpa", words transformers 5 reacts to.

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
            return REGISTERED[self.backend]
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


def resolve(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int,
            features: dict[str, str] | None = None) -> Choice:
    """The backend to use for a model whose attention needs `features` (`model_features`).

    A named backend that cannot run here, or cannot honour one of the
    features, raises `ValueError` with one line saying why and naming a
    backend that can; ``auto`` takes the first varlen backend that can.
    """
    features = features or {}
    if requested != "auto":
        reason = unavailable(requested, device, dtype, head_dim)
        if reason:
            raise ValueError(f"kernels.attention = {requested}: {reason}; use kernels.attention=auto "
                             "to take the best backend this machine has")
        refused = refusal(requested, features)
        if refused:
            raise ValueError(refused)
        return Choice(requested, "set in the recipe")
    skipped = []
    for backend in VARLEN:
        reason = unavailable(backend, device, dtype, head_dim)
        if reason is None and unsupported(backend, features):
            reason = "cannot honour the model's " + ", ".join(unsupported(backend, features))
        if reason is None:
            why = "auto" + (f": {'; '.join(skipped)}" if skipped else ": the fastest here")
            return Choice(backend, why)
        skipped.append(f"{backend} {reason}")
    raise AssertionError("sdpa_varlen runs everywhere and honours every feature")


def varlen_kwargs(cu_seqlens: torch.Tensor, max_seqlen: int, device) -> dict:
    """Keyword arguments of a model call that every varlen backend reads."""
    cu = cu_seqlens.to(device=device, dtype=torch.int32, non_blocking=True)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_seqlen,
            "max_length_k": max_seqlen, "medtune_bounds": tuple(cu_seqlens.tolist())}


# --------------------------------------------------------------------------
# What a model asks of its attention, and which backend honours it
# --------------------------------------------------------------------------

SLIDING_WINDOW = "sliding window"
SOFTCAP = "attention soft-capping"
SINKS = "attention sinks"
NON_CAUSAL = "non-causal attention"


def model_features(cfg) -> dict[str, str]:
    """What the attention of a transformers config needs beyond causal softmax attention.

    Maps a feature (`SLIDING_WINDOW`, `SOFTCAP`, `SINKS`) to the config
    value that asks for it, for the refusal line. Read from the config keys
    transformers' model code reads: ``sliding_window`` (with ``layer_types``
    or Qwen2's ``use_sliding_window``), ``attn_logit_softcapping``, and the
    learned per-head sinks of gpt-oss (its attention passes ``s_aux``).
    """
    get = (lambda k, d=None: getattr(cfg, k, d)) if not isinstance(cfg, dict) else cfg.get
    out = {}
    window = get("sliding_window")
    layer_types = get("layer_types")
    if window and (layer_types is None or "sliding_attention" in layer_types) \
            and get("use_sliding_window", True) is not False:
        out[SLIDING_WINDOW] = f"sliding_window {window}"
    if get("attn_logit_softcapping"):
        out[SOFTCAP] = f"attn_logit_softcapping {get('attn_logit_softcapping')}"
    if get("model_type") in _SINK_MODELS:
        out[SINKS] = f"model_type {get('model_type')} learns per-head attention sinks"
    return out


_SINK_MODELS = ("gpt_oss",)


def unsupported(backend: str, features) -> list[str]:
    """The features of `features` (from `model_features`) that `backend` cannot honour."""
    if backend in ("sdpa_varlen", "eager"):
        return []
    cannot: set[str] = set()
    if backend == "flash_attn":
        cannot = {SINKS} | (set() if _flash_softcap() else {SOFTCAP})
    elif backend == "torch_varlen":
        cannot = {SOFTCAP, SINKS} | (set() if _torch_varlen_has("window_size") else {SLIDING_WINDOW})
    elif backend == "sdpa":
        cannot = {SOFTCAP, SINKS}  # transformers' sdpa raises on softcap and has no sinks
    elif backend == "flex_attention":
        cannot = {SINKS}           # "Attention sinks cannot be run on CPU with flex attention"
    return [f for f in features if f in cannot]


def refusal(backend: str, features: dict[str, str]) -> str | None:
    """One line saying why `backend` cannot run a model with `features`; None when it can."""
    missing = unsupported(backend, features)
    if not missing:
        return None
    able = [b for b in (*VARLEN, *HF_NATIVE) if not unsupported(b, features)]
    what = "; ".join(f"{f} ({features[f]})" for f in missing)
    return (f"kernels.attention = {backend} cannot honour the model's {what}; "
            f"use kernels.attention={able[0]}" + (f" (or {', '.join(able[1:])})" if able[1:] else ""))


# --------------------------------------------------------------------------
# The attention functions transformers calls: query [1, H, L, D], key and
# value [1, H_kv, L, D]; they return ([1, L, H, D], None). Every argument
# transformers passes is honoured or refused (`_check_call`).
# --------------------------------------------------------------------------

def _sdpa_varlen(module, query, key, value, attention_mask, dropout: float = 0.0,
                 scaling: float | None = None, medtune_bounds: tuple[int, ...] | None = None,
                 sliding_window: int | None = None, softcap: float | None = None,
                 s_aux: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    _check_packed(medtune_bounds is not None, attention_mask)
    _check_call("sdpa_varlen", kwargs)
    bounds = medtune_bounds
    parts = [sample_attention(query[0, :, a:b], key[0, :, a:b], value[0, :, a:b], scale=scaling,
                              window=sliding_window, softcap=softcap, sinks=s_aux,
                              dropout=dropout)
             for a, b in zip(bounds, bounds[1:])]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return out.transpose(0, 1).unsqueeze(0), None


def sample_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                     window: int | None = None, softcap: float | None = None,
                     sinks: torch.Tensor | None = None, dropout: float = 0.0) -> torch.Tensor:
    """Causal attention of one sample: q ``[H, L, D]``, k and v ``[H_kv, L, D]`` -> ``[H, L, D]``.

    ``window``: query i sees keys ``i - window + 1 .. i`` (transformers'
    ``sliding_window``, ``kv_idx > q_idx - window`` in ``masking_utils``).
    ``softcap``: scores become ``softcap * tanh(scores / softcap)`` before the
    mask (Gemma-2). ``sinks`` ``[H]``: one learned logit per head joins each
    softmax and is dropped after it (gpt-oss ``s_aux``). Without soft-capping
    or sinks this is one ``scaled_dot_product_attention`` call (a banded
    boolean mask when the window is shorter than the sample); with either,
    transformers' eager math, in fp32 softmax.
    """
    n = q.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    band = window is not None and 0 < window < n
    mask = None
    if band or softcap or sinks is not None:
        i = torch.arange(n, device=q.device)
        mask = i[None, :] <= i[:, None]
        if band:
            mask &= i[None, :] > i[:, None] - window
    if not softcap and sinks is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask if band else None,
                                              dropout_p=dropout, is_causal=not band, scale=scale,
                                              enable_gqa=q.shape[0] != k.shape[0])
    if q.shape[0] != k.shape[0]:
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
        v = v.repeat_interleave(q.shape[0] // v.shape[0], dim=0)
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is not None:
        sink = sinks.reshape(-1, 1, 1).to(scores.dtype).expand(-1, n, 1)
        scores = torch.cat([scores, sink], dim=-1)
        scores = scores - scores.amax(dim=-1, keepdim=True)
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    if sinks is not None:
        probs = probs[..., :-1]
    if dropout:
        probs = F.dropout(probs, p=dropout)
    return probs @ v


def _flash_attn(module, query, key, value, attention_mask, dropout: float = 0.0,
                scaling: float | None = None, cu_seq_lens_q=None, max_length_q: int | None = None,
                sliding_window: int | None = None, softcap: float | None = None,
                **kwargs) -> tuple[torch.Tensor, None]:
    _check_packed(cu_seq_lens_q is not None, attention_mask)
    _check_call("flash_attn", kwargs, softcap=None if _flash_softcap() else softcap)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [L, H, D]
    window = (sliding_window - 1, 0) if sliding_window else (-1, -1)
    extra = {"softcap": float(softcap)} if softcap else {}
    out = _flash_attn_varlen()(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q,
                               dropout_p=dropout, softmax_scale=scaling, causal=True,
                               window_size=window, **extra)
    return out.unsqueeze(0), None


def _torch_varlen_attn(module, query, key, value, attention_mask, dropout: float = 0.0,
                       scaling: float | None = None, cu_seq_lens_q=None, max_length_q: int | None = None,
                       sliding_window: int | None = None, softcap: float | None = None,
                       **kwargs) -> tuple[torch.Tensor, None]:
    if dropout:
        raise ValueError("kernels.attention = torch_varlen has no attention dropout; use flash_attn")
    _check_packed(cu_seq_lens_q is not None, attention_mask)
    _check_call("torch_varlen", kwargs, softcap=softcap,
                sliding_window=None if _torch_varlen_has("window_size") else sliding_window)
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
    if scale is not None and "scale" not in params:
        q = q * (scale * q.shape[-1] ** 0.5)  # the kernel's own scale is 1/sqrt(D)
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


# Keyword arguments transformers' attention layers pass that change the result; each
# backend takes some in its signature, and any other one left in kwargs is refused.
_CHANGES_RESULT = {"softcap": SOFTCAP, "s_aux": SINKS, "sinks": SINKS, "sliding_window": SLIDING_WINDOW,
                   "position_bias": "an additive position bias", "indices": "sparse attention indices",
                   "block_indices": "sparse attention indices"}


def _check_call(backend: str, kwargs: dict, **unhonoured) -> None:
    """Refuse, in one line, any argument of this call `backend` would drop."""
    found = {k: v for k, v in {**kwargs, **unhonoured}.items()
             if k in _CHANGES_RESULT and v is not None and v is not False}
    if kwargs.get("is_causal") is False:
        found["is_causal"] = False
    if found:
        key, value = next(iter(found.items()))
        what = _CHANGES_RESULT.get(key, NON_CAUSAL)
        able = [b for b in VARLEN if what not in unsupported(b, {what: ""}) and b != backend]
        raise ValueError(f"kernels.attention = {backend} cannot honour the model's {what} "
                         f"({key}={value if not torch.is_tensor(value) else 'tensor'}); "
                         f"use kernels.attention={able[0] if able else 'eager'}")


def _flash_attn_varlen():
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func


def _flash_softcap() -> bool:
    """Whether the installed flash-attn takes ``softcap`` (2.6 and later); True when it is absent."""
    if importlib.util.find_spec("flash_attn") is None:
        return True  # not installed: `unavailable` says so
    try:
        return "softcap" in inspect.signature(_flash_attn_varlen()).parameters
    except (ImportError, ValueError, TypeError):
        return True


def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _torch_varlen_has(parameter: str) -> bool:
    """Whether this torch's ``varlen_attn`` takes `parameter` (``window_size`` is new in 2.11)."""
    fn = _torch_varlen()
    return fn is not None and parameter in inspect.signature(fn).parameters


_FUNCTIONS = {"flash_attn": _flash_attn, "torch_varlen": _torch_varlen_attn, "sdpa_varlen": _sdpa_varlen}
# The names transformers knows them by: none may contain "flash" (transformers 5 then loads a
# hub kernel or FlashAttention's own checks), "sdpa" (it then asks the model for sdpa support,
# which Gemma-2 lacks) or "flex".
REGISTERED = {"flash_attn": "medtune_fa_varlen", "torch_varlen": "medtune_torch_varlen",
              "sdpa_varlen": "medtune_per_sample"}


def register() -> None:
    """Make `REGISTERED` names known to transformers (idempotent)."""
    from transformers import AttentionInterface

    for name, fn in _FUNCTIONS.items():
        AttentionInterface.register(REGISTERED[name], fn)
