"""A packed row's logits and gradients equal each sample's alone, for every backend that runs here."""
from __future__ import annotations

import pytest
import torch

from medtune.config import KernelsConfig
from medtune.data.collator import collate
from medtune.engine.trainer import Kernels, forward, micro_loss
from medtune.kernels.attention import HF_NATIVE, VARLEN, Choice, resolve, unavailable
from tests.integration.helpers import TINY_LLAMA

CPU = torch.device("cpu")
ALLOWED = KernelsConfig.__pydantic_fields__["attention"].annotation.__args__
ON_CPU = [b for b in (*VARLEN, *HF_NATIVE) if unavailable(b, CPU, torch.float32, 16) is None]
LENGTHS = (17, 1, 40, 9)


def _model(backend: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(TINY_LLAMA)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg),
                                            attn_implementation=Choice(backend, "test").implementation)


def _samples() -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in LENGTHS]


def test_every_recipe_choice_is_a_backend():
    assert set(ALLOWED) == {"auto", *VARLEN, *HF_NATIVE}
    assert "sdpa_varlen" in ON_CPU and "sdpa" in ON_CPU


@pytest.mark.parametrize("backend", ON_CPU)
def test_packed_logits_equal_unpacked(backend):
    net = _model(backend).eval()
    samples = _samples()
    batch = collate([(s, s) for s in samples], pad_id=0)
    choice = Choice(backend, "test")
    with torch.no_grad():
        packed = forward(net, batch, "cpu", choice)[0]
        start = 0
        for s in samples:
            alone = forward(net, collate([(s, s)], pad_id=0), "cpu", choice)[0]
            torch.testing.assert_close(packed[start:start + len(s)], alone, rtol=1e-5, atol=1e-5)
            start += len(s)


@pytest.mark.parametrize("backend", [b for b in ON_CPU if b in VARLEN])
def test_packed_gradients_equal_the_sum_over_samples_and_match_sdpa(backend):
    """The loss of a packed row, its gradients, and transformers' own sdpa path agree."""
    samples = _samples()
    batch = collate([(s, s) for s in samples], pad_id=0)
    grads = {}
    for name in (backend, "sdpa"):
        net = _model(name)
        loss = micro_loss(net, batch, "cpu", Kernels(Choice(name, "test")))
        loss.backward()
        grads[name] = (loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters()})
    alone = _model(backend)
    total = sum(micro_loss(alone, collate([(s, s)], pad_id=0), "cpu", Kernels(Choice(backend, "test")))
                for s in samples)
    total.backward()
    loss, g = grads[backend]
    torch.testing.assert_close(loss, grads["sdpa"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, total.detach(), rtol=1e-5, atol=1e-5)
    for k, p in alone.named_parameters():
        torch.testing.assert_close(g[k], grads["sdpa"][1][k], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g[k], p.grad, rtol=1e-4, atol=1e-6)


def test_auto_takes_sdpa_varlen_on_cpu_and_says_why():
    choice = resolve("auto", CPU, torch.float32, 64)
    assert choice.backend == "sdpa_varlen" and "flash_attn needs a CUDA GPU" in choice.why


@pytest.mark.parametrize("backend", ["flash_attn", "torch_varlen"])
def test_a_gpu_backend_named_on_cpu_is_refused_in_one_line(backend):
    with pytest.raises(ValueError, match=rf"^kernels.attention = {backend}: needs a CUDA GPU; use "
                                         r"kernels.attention=auto"):
        resolve(backend, CPU, torch.float32, 64)


def test_varlen_backend_without_bounds_fails_clearly():
    net = _model("sdpa_varlen")
    with pytest.raises(ValueError, match="without the packed row's sample bounds"):
        net(input_ids=torch.tensor([[5, 6, 7]]))


def test_sdpa_varlen_honours_a_sliding_window_shorter_than_a_sample():
    """Mistral with window 8: a 17-token sample alone through eager equals it packed through sdpa_varlen."""
    from transformers import AutoConfig, AutoModelForCausalLM

    def build(impl, window=8):
        cfg = {**TINY_LLAMA, "model_type": "mistral", "sliding_window": window}
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg),
                                                attn_implementation=impl)
    net, eager = build(Choice("sdpa_varlen", "t").implementation), build("eager")
    samples = _samples()
    with torch.no_grad():
        packed = forward(net, collate([(s, s) for s in samples], pad_id=0), "cpu", Choice("sdpa_varlen", "t"))[0]
        alone = forward(eager, collate([(samples[2], samples[2])], pad_id=0), "cpu", Choice("eager", "t"))[0]
        unwindowed = forward(build("eager", window=None),
                             collate([(samples[2], samples[2])], pad_id=0), "cpu", Choice("eager", "t"))[0]
    torch.testing.assert_close(packed[18:58], alone, rtol=1e-5, atol=1e-5)
    assert (alone - unwindowed).abs().max() > 1e-3  # the window changes this 40-token sample
