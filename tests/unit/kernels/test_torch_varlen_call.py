"""`_call_varlen` gives each release's ``varlen_attn`` only the keywords it takes (torch 2.9 to 2.13)."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from medtune.kernels.attention import _call_varlen

L, H, H_KV, D = 7, 4, 2, 8
BOUNDS = (0, 3, 7)


def _reference(q, k, v, cu, causal=True):
    """Per-sample causal attention in [L, H, D], heads of k/v repeated to q's: what varlen_attn computes."""
    k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    parts = []
    for a, b in zip(cu.tolist(), cu.tolist()[1:]):
        o = F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), is_causal=causal)
        parts.append(o.transpose(0, 1))
    return torch.cat(parts)


def _fake(signature: str, calls: list):
    """A varlen_attn with the keyword-only arguments of one release, checking heads like the kernel."""
    def fn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kw):
        calls.append(kw)
        if key.shape[1] != query.shape[1] and not kw.get("enable_gqa"):
            raise RuntimeError("heads of key and query differ")
        causal = kw.get("is_causal", False) or kw.get("window_size") == (-1, 0)
        return _reference(query, key, value, cu_seq_q, causal)
    namespace: dict = {}
    exec(f"def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, {signature}):\n"
         "    pass", namespace)
    fn.__signature__ = inspect.signature(namespace["varlen_attn"])
    return fn


RELEASES = {
    "2.9 (is_causal)": "return_aux=None, is_causal=False",
    "window_size, no enable_gqa": "return_aux=None, scale=None, window_size=(-1, -1)",
    "2.13 (enable_gqa)": "return_aux=None, scale=None, window_size=(-1, -1), enable_gqa=False",
}


@pytest.mark.parametrize("release", RELEASES)
def test_every_release_gets_only_its_keywords_and_the_same_causal_gqa_result(release):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(L, H, D, generator=gen)
    k, v = torch.randn(L, H_KV, D, generator=gen), torch.randn(L, H_KV, D, generator=gen)
    cu = torch.tensor(BOUNDS, dtype=torch.int32)
    calls: list = []
    out = _call_varlen(_fake(RELEASES[release], calls), q, k, v, cu, 4, None, (-1, 0))
    assert torch.allclose(out, _reference(q, k, v, cu), atol=1e-6)
    (kw,) = calls
    allowed = {part.split("=")[0] for part in RELEASES[release].replace(" ", "").split(",")}
    assert set(kw) <= allowed, f"{set(kw) - allowed} not taken by {release}"


def test_a_sliding_window_without_window_size_is_refused():
    q = torch.randn(L, H, D)
    with pytest.raises(ValueError, match="no sliding window"):
        _call_varlen(_fake(RELEASES["2.9 (is_causal)"], []), q, q, q, torch.tensor(BOUNDS), 4, None, (3, 0))
