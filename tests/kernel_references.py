"""CPU stand-ins for the GPU varlen kernels, with their exact signatures.

`flash_attn_varlen_func` has flash-attn 2.8's signature, `varlen_attn`
torch 2.13's (``torch.nn.attention.varlen.varlen_attn``). Both compute each
sample with explicit masks and eager math (`reference_attention`), so a CPU
test runs medtune's wrappers end to end — every argument they forward is
used, and a dropped one shows up as a wrong logit.
"""
from __future__ import annotations

import torch


def reference_attention(q, k, v, scale, left: int, causal: bool, softcap: float = 0.0):
    """One sample: q ``[L, H, D]``, k/v ``[L, H_kv, D]`` -> ``[L, H, D]`` (flash-attn's layout).

    Query i sees key j when ``j <= i`` (causal) and ``j >= i - left`` (left >= 0).
    """
    h, hk = q.shape[1], k.shape[1]
    if h != hk:
        k, v = k.repeat_interleave(h // hk, dim=1), v.repeat_interleave(h // hk, dim=1)
    s = torch.einsum("ihd,jhd->hij", q.float(), k.float()) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    n = q.shape[0]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = torch.ones(n, n, dtype=torch.bool)
    if causal:
        allowed &= j <= i
    if left >= 0:
        allowed &= j >= i - left
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hij,jhd->ihd", torch.softmax(s, dim=-1), v.float()).to(q.dtype)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                           alibi_slopes=None, deterministic=False, return_attn_probs=False,
                           block_table=None):
    assert dropout_p == 0.0 and alibi_slopes is None and block_table is None and not return_attn_probs
    assert torch.equal(cu_seqlens_q, cu_seqlens_k) and max_seqlen_q == max_seqlen_k
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    bounds = cu_seqlens_q.tolist()
    assert max(b - a for a, b in zip(bounds, bounds[1:])) == max_seqlen_q
    return torch.cat([reference_attention(q[a:b], k[a:b], v[a:b], scale, window_size[0], causal, softcap)
                      for a, b in zip(bounds, bounds[1:])])


def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None, num_splits=None):
    assert return_aux is None and seqused_k is None and block_table is None
    assert enable_gqa or query.shape[1] == key.shape[1], "GQA without enable_gqa"
    left, right = window_size
    assert right in (-1, 0)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    bounds = cu_seq_q.tolist()
    return torch.cat([reference_attention(query[a:b], key[a:b], value[a:b], scale, left, right == 0)
                      for a, b in zip(bounds, bounds[1:])])


def install(monkeypatch) -> None:
    """Make medtune's flash_attn and torch_varlen wrappers call these stand-ins."""
    from medtune.kernels import attention

    monkeypatch.setattr(attention, "_flash_attn_varlen", lambda: flash_attn_varlen_func)
    monkeypatch.setattr(attention, "_torch_varlen", lambda: varlen_attn)
