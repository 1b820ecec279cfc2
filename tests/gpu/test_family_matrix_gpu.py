"""The family x kernel x loss-head matrix of tests/unit/models/test_family_matrix.py, in bf16 on CUDA.

Real kernels this time (flash-attn when installed, torch's varlen_attn, the
per-sample sdpa path, transformers' own). For every family built tiny from
its config and every backend that runs on this GPU and accepts the model, a
packed row's bf16 logits match each sample alone through transformers'
``eager`` in fp32 with the same weights, ``|a - b| / |b| < 2e-2``; a backend
that cannot honour the model refuses in one line; the chunked loss head
matches the standard one within 1e-2 (value) and 2e-2 (lm_head gradient).
Skipped without CUDA.
"""
from __future__ import annotations

import copy

import pytest
import torch

from medtune.data.collator import collate
from medtune.engine.trainer import Kernels, forward, micro_loss
from medtune.models.families import FAMILIES
from medtune.kernels.attention import VARLEN, Choice, model_features, refusal, unavailable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LENGTHS = (17, 1, 40, 9, 130)   # three samples longer than the tiny sliding window (8)
HEAD_DIM = 16                   # every tiny family: hidden 64 / 4 heads, or head_dim 16


def _backends() -> list[str]:
    if not torch.cuda.is_available():
        return []
    # flex_attention is left out: it compiles once per sample length, minutes of device time
    return [b for b in (*VARLEN, "sdpa", "eager")
            if unavailable(b, torch.device("cuda"), torch.bfloat16, HEAD_DIM) is None]


def _config(family: str):
    from transformers import AutoConfig

    cfg = dict(FAMILIES[family].tiny)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def _model(cfg, backend: str, dtype, state: dict | None = None):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=Choice(backend, "t").implementation,
                                           dtype=dtype)
    if state is not None:
        net.load_state_dict(state)
    return net.cuda().eval()


def _samples() -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in LENGTHS]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_bf16_logits_match_each_sample_alone_through_eager_fp32(family, backend):
    cfg = _config(family)
    refused = refusal(backend, model_features(cfg))
    if refused:
        assert "\n" not in refused and "cannot honour" in refused
        if backend in VARLEN:
            net = _model(cfg, backend, torch.bfloat16)
            with pytest.raises(ValueError, match="cannot honour the model's"):
                forward(net, collate([(s, s) for s in _samples()], 0), "cuda", Choice(backend, "t"))
        return
    eager = _model(cfg, "eager", torch.float32)
    state = {k: v.to(torch.bfloat16) for k, v in eager.state_dict().items()}
    net = _model(cfg, backend, torch.bfloat16, state)
    samples = _samples()
    with torch.no_grad():
        packed = forward(net, collate([(s, s) for s in samples], 0), "cuda", Choice(backend, "t"))[0]
        alone = torch.cat([forward(eager, collate([(s, s)], 0), "cuda", Choice("eager", "t"))[0]
                           for s in samples])
    assert packed.dtype == torch.bfloat16
    assert _rel(packed, alone) < 2e-2, f"{family}/{backend}: {_rel(packed, alone):.3e}"


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_loss_matches_standard_in_bf16(family):
    cfg = _config(family)
    backend = next(b for b in _backends() if b in VARLEN and not refusal(b, model_features(cfg)))
    batch = collate([(s, s) for s in _samples()], 0)
    out = {}
    for head in ("standard", "chunked"):
        net = _model(cfg, backend, torch.bfloat16).train()
        loss = micro_loss(net, batch, "cuda", Kernels(Choice(backend, "t"), head, chunk_tokens=64))
        loss.backward()
        out[head] = (loss.detach(), net.get_output_embeddings().weight.grad)
    assert abs(out["chunked"][0].item() - out["standard"][0].item()) / out["standard"][0].item() < 1e-2
    assert _rel(out["chunked"][1], out["standard"][1]) < 2e-2
