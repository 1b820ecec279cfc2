"""Families x attention backends x loss heads, fp32 on CPU (issue 19, sections 2-3).

Every family of `medtune.models.families.FAMILIES` is built tiny from its config.
For each attention backend (the GPU kernels replaced by CPU stand-ins of the
same signature, `tests.kernel_references`) that accepts the model, a packed
row's logits equal each sample run alone through transformers' ``eager``
within 1e-5; a backend that cannot honour the model is refused in one line
naming the feature and a backend that can, and its attention function refuses
the call rather than drop an argument. The chunked loss head equals the
standard one (value and gradients) within 1e-5.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch

from medtune.data.collator import collate
from medtune.engine.trainer import Kernels, forward, micro_loss
from medtune.models.families import FAMILIES
from medtune.kernels.attention import HF_NATIVE, REGISTERED, VARLEN, Choice, model_features, refusal, resolve
from tests import kernel_references

BACKENDS = (*VARLEN, *HF_NATIVE)
LENGTHS = (17, 1, 40, 9)   # two samples longer than the tiny sliding window (8)


def _config(family: str, **override):
    from transformers import AutoConfig

    cfg = {**FAMILIES[family].tiny, **override}
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def _model(cfg, backend: str, state: dict | None = None):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)  # a copy: from_config writes the implementation into the config it gets
    net = AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=Choice(backend, "t").implementation)
    if state is not None:
        net.load_state_dict(state)
    return net.eval()


def _samples(vocab: int = 1000) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in LENGTHS]


@pytest.fixture(autouse=True)
def _cpu_kernels(monkeypatch):
    kernel_references.install(monkeypatch)


def test_registered_names_are_ones_transformers_takes_as_custom_functions():
    """transformers 5 reads "flash" as a hub-kernel request and "sdpa" as a support check."""
    for name in REGISTERED.values():
        assert not any(word in name for word in ("flash", "sdpa", "flex")), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_logits_equal_each_sample_alone_through_eager(family, backend):
    cfg = _config(family)
    features = model_features(cfg)
    refused = refusal(backend, features)
    if refused:
        assert "\n" not in refused and refused.startswith(f"kernels.attention = {backend} cannot honour")
        assert any(f in refused for f in features)
        able = refused.split("use kernels.attention=")[1].split()[0]
        assert refusal(able, features) is None
        if backend not in ("flash_attn", "torch_varlen"):  # those two say first that they need CUDA
            with pytest.raises(ValueError, match=f"^{re.escape(refused)}$"):
                resolve(backend, torch.device("cpu"), torch.float32, 16, features)
        if backend in VARLEN:  # the attention function itself refuses rather than drop an argument
            net = _model(cfg, backend)
            with pytest.raises(ValueError, match=r"cannot honour the model's"):
                forward(net, collate([(s, s) for s in _samples()], 0), "cpu", Choice(backend, "t"))
        return
    eager = _model(cfg, "eager")
    net = _model(cfg, backend, eager.state_dict())
    samples = _samples()
    with torch.no_grad():
        packed = forward(net, collate([(s, s) for s in samples], 0), "cpu", Choice(backend, "t"))[0]
        start = 0
        for s in samples:
            alone = forward(eager, collate([(s, s)], 0), "cpu", Choice("eager", "t"))[0]
            torch.testing.assert_close(packed[start:start + len(s)], alone, rtol=1e-5, atol=1e-5)
            start += len(s)


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_loss_equals_standard_loss(family):
    cfg = _config(family)
    batch = collate([(s, s) for s in _samples()], 0)
    out = {}
    for head in ("standard", "chunked"):
        net = _model(cfg, "sdpa_varlen").train()
        loss = micro_loss(net, batch, "cpu", Kernels(Choice("sdpa_varlen", "t"), head, chunk_tokens=16))
        loss.backward()
        out[head] = (loss.detach(), {k: p.grad for k, p in net.named_parameters() if p.grad is not None})
    torch.testing.assert_close(out["chunked"][0], out["standard"][0], rtol=1e-5, atol=1e-5)
    assert out["chunked"][1].keys() == out["standard"][1].keys()
    for k, g in out["standard"][1].items():
        torch.testing.assert_close(out["chunked"][1][k], g, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.parametrize("cap", [1.0, 30.0])
def test_chunked_loss_applies_gemma2_final_logit_softcapping(cap):
    """Issue 19: 371.341 standard vs 379.031 chunked (cap 30), 253.73 vs 398.70 (cap 1) before the fix."""
    cfg = _config("gemma2", final_logit_softcapping=cap, initializer_range=0.2)
    batch = collate([(s, s) for s in _samples()], 0)
    net = _model(cfg, "sdpa_varlen")
    with torch.no_grad():
        standard = micro_loss(net, batch, "cpu", Kernels(Choice("sdpa_varlen", "t")))
        chunked = micro_loss(net, batch, "cpu", Kernels(Choice("sdpa_varlen", "t"), "chunked", 16))
    torch.testing.assert_close(chunked, standard, rtol=1e-5, atol=1e-5)
    # the capped loss is not the uncapped one: a head that ignored the cap would fail above
    with torch.no_grad():
        net.config.final_logit_softcapping = None
        uncapped = micro_loss(net, batch, "cpu", Kernels(Choice("sdpa_varlen", "t")))
    assert abs(uncapped.item() - standard.item()) > 1e-2


def test_attention_softcap_reaches_every_varlen_kernel():
    """A soft-cap of 1.0 changes the logits a lot (0.69 when flash_attn dropped it); each kernel keeps it."""
    cfg = _config("gemma2", attn_logit_softcapping=1.0, initializer_range=0.2)
    eager = _model(cfg, "eager")
    samples = _samples()
    with torch.no_grad():
        ref = torch.cat([forward(eager, collate([(s, s)], 0), "cpu", Choice("eager", "t"))[0] for s in samples])
        cfg_nocap = _config("gemma2", attn_logit_softcapping=None, initializer_range=0.2)
        nocap = _model(cfg_nocap, "eager", eager.state_dict())
        off = torch.cat([forward(nocap, collate([(s, s)], 0), "cpu", Choice("eager", "t"))[0] for s in samples])
        assert (ref - off).abs().max() > 0.1
        for backend in ("flash_attn", "sdpa_varlen"):
            net = _model(cfg, backend, eager.state_dict())
            packed = forward(net, collate([(s, s) for s in samples], 0), "cpu", Choice(backend, "t"))[0]
            torch.testing.assert_close(packed, ref, rtol=1e-5, atol=1e-5)


def test_sinks_are_computed_or_refused():
    """gpt-oss style per-head sinks: sdpa_varlen computes them; the flash kernels refuse them."""
    from medtune.kernels.attention import sample_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(4, 6, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    sinks = torch.randn(4)
    out = sample_attention(q, k, v, scale=0.3, sinks=sinks)
    kk, vv = k.repeat_interleave(2, 0), v.repeat_interleave(2, 0)
    s = (q @ kk.transpose(1, 2)) * 0.3
    s = s.masked_fill(torch.ones(6, 6).triu(1).bool(), float("-inf"))
    s = torch.cat([s, sinks[:, None, None].expand(4, 6, 1)], -1)
    torch.testing.assert_close(out, torch.softmax(s, -1)[..., :-1] @ vv)
    features = {"attention sinks": "model_type gpt_oss"}
    for backend in ("flash_attn", "torch_varlen"):
        assert refusal(backend, features).endswith("use kernels.attention=sdpa_varlen (or eager)")
    assert resolve("auto", torch.device("cpu"), torch.float32, 64, features).backend == "sdpa_varlen"


@pytest.mark.parametrize("model_type,transform", [("cohere", {"logit_scale": 4.0}),
                                                  ("granite", {"logits_scaling": 0.25})])
def test_chunked_loss_applies_the_logit_scale(model_type, transform):
    """unsloth#11277: a fused head dropped Cohere's logit_scale and Granite's logits_scaling."""
    from transformers import AutoConfig

    from medtune.models.families import _TINY

    cfg = AutoConfig.for_model(model_type, **{**_TINY, **transform, "initializer_range": 0.2})
    batch = collate([(s, s) for s in _samples()], 0)
    net = _model(cfg, "sdpa_varlen")
    with torch.no_grad():
        standard = micro_loss(net, batch, "cpu", Kernels(Choice("sdpa_varlen", "t")))
        chunked = micro_loss(net, batch, "cpu", Kernels(Choice("sdpa_varlen", "t"), "chunked", 16))
        plain = AutoConfig.for_model(model_type, **{**_TINY, **{k: 1.0 for k in transform},
                                                    "initializer_range": 0.2})
        unscaled = micro_loss(_model(plain, "sdpa_varlen", net.state_dict()), batch, "cpu",
                              Kernels(Choice("sdpa_varlen", "t")))
    torch.testing.assert_close(chunked, standard, rtol=1e-5, atol=1e-5)
    assert abs(unscaled.item() - standard.item()) > 1.0


def test_a_logit_transform_the_chunked_head_does_not_know_is_refused_before_any_rank(
        tmp_path, capsys, monkeypatch):
    """A model whose forward changes its logits in a way `LogitTransform` misses: one line, exit 2."""
    import yaml

    from medtune import cli
    from medtune.kernels import loss
    from tests.conftest import RECIPES

    monkeypatch.setattr(loss.LogitTransform, "from_config", classmethod(lambda cls, cfg: cls()))
    recipe = tmp_path / "gemma2.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"config": FAMILIES["gemma2"].tiny, "train_tokenizer": {"vocab_size": 1000}},
        "data": {"sources": [{"path": str(RECIPES / "data" / "demo.jsonl")}], "max_tokens": 512},
        "kernels": {"loss": "chunked"}}))
    code = cli.main(["train", str(recipe), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"medtune: error: {recipe}: kernels.loss = chunked cannot reproduce the logits "
                             "of model_type gemma2's forward"), err[0]
    assert err[0].endswith("use kernels.loss=standard")
    assert not (tmp_path / "run").exists()
