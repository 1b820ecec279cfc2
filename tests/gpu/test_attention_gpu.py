"""GPU kernels against transformers' sdpa on the same packed rows (bf16); skipped without CUDA.

Each varlen backend that runs on this GPU must give the packed row's logits,
loss and every parameter gradient of transformers' own sdpa path (which
isolates the samples with a dense mask) within bf16 tolerance; the chunked
loss must match the standard one; benchmark 5 must run.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from medtune.data.collator import collate
from medtune.engine.trainer import Kernels, forward, micro_loss
from medtune.kernels.attention import VARLEN, Choice, unavailable
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = dict(model_type="llama", hidden_size=512, intermediate_size=1376, num_hidden_layers=2,
              num_attention_heads=8, num_key_value_heads=2, vocab_size=4096,
              max_position_embeddings=4096, tie_word_embeddings=False)
LENGTHS = (300, 1, 77, 1024, 129, 515)


def _backends() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [b for b in VARLEN if unavailable(b, torch.device("cuda"), torch.bfloat16, 64) is None]


def _model(backend: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(CONFIG)
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg),
                                           attn_implementation=Choice(backend, "t").implementation,
                                           dtype=torch.bfloat16)
    return net.cuda()


def _batch():
    gen = torch.Generator().manual_seed(1)
    samples = [torch.randint(3, CONFIG["vocab_size"], (n,), generator=gen).tolist() for n in LENGTHS]
    return collate([(s, s) for s in samples], pad_id=0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def test_at_least_one_varlen_kernel_besides_sdpa_varlen_runs_here():
    assert set(_backends()) - {"sdpa_varlen"}, \
        "no GPU varlen kernel runs here: " + "; ".join(
            f"{b}: {unavailable(b, torch.device('cuda'), torch.bfloat16, 64)}" for b in VARLEN)


@pytest.mark.parametrize("backend", _backends())
def test_backend_matches_sdpa_on_packed_rows(backend):
    batch = _batch()
    results = {}
    for name in (backend, "sdpa"):
        net = _model(name)
        with torch.no_grad():
            logits = forward(net, batch, "cuda", Choice(name, "t"))[0]
        loss = micro_loss(net, batch, "cuda", Kernels(Choice(name, "t")))
        loss.backward()
        results[name] = (logits, loss.detach(), {k: p.grad for k, p in net.named_parameters()})
    logits, loss, grads = results[backend]
    ref_logits, ref_loss, ref_grads = results["sdpa"]
    assert _rel(logits, ref_logits) < 2e-2
    assert abs(loss.item() - ref_loss.item()) / ref_loss.item() < 1e-2
    worst = max(grads, key=lambda k: _rel(grads[k], ref_grads[k]))
    assert _rel(grads[worst], ref_grads[worst]) < 5e-2, worst


def test_chunked_loss_matches_standard_in_bf16():
    batch = _batch()
    backend = _backends()[0]
    out = {}
    for loss_kind in ("standard", "chunked"):
        net = _model(backend)
        loss = micro_loss(net, batch, "cuda", Kernels(Choice(backend, "t"), loss=loss_kind, chunk_tokens=256))
        loss.backward()
        out[loss_kind] = (loss.detach(), net.lm_head.weight.grad, net.model.norm.weight.grad)
    assert abs(out["chunked"][0].item() - out["standard"][0].item()) / out["standard"][0].item() < 1e-2
    assert _rel(out["chunked"][1], out["standard"][1]) < 2e-2
    assert _rel(out["chunked"][2], out["standard"][2]) < 2e-2


def test_benchmark_5_runs():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--layers", "2",
                           "--steps", "2", "--warmup", "1"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MFU" in proc.stdout and "padded" in proc.stdout
