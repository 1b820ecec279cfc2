"""The chunked linear + cross-entropy head equals the standard head, value and both gradients."""
from __future__ import annotations

import pytest
import torch

from medtune.kernels.loss import auto_chunk_tokens, ce_sum, chunked_ce_sum, token_ce_sum

V, H = 37, 16


def _inputs(n: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, H, generator=gen).to(dtype).requires_grad_()
    weight = torch.nn.Parameter(torch.randn(V, H, generator=gen).to(dtype))
    targets = torch.randint(0, V, (n,), generator=gen)
    return hidden, weight, targets


def _value_and_grads(fn, hidden, weight, scale: float = 1.0):
    hidden.grad = weight.grad = None
    loss = fn()
    (loss * scale).backward()
    return loss.detach(), hidden.grad.clone(), weight.grad.clone()


@pytest.mark.parametrize("n, chunk", [(10, 64), (10, 1), (10, 3), (10, 10), (10, 0), (0, 4), (0, 0)])
def test_value_and_grads_equal_standard(n, chunk):
    hidden, weight, targets = _inputs(n)
    want = _value_and_grads(lambda: ce_sum(hidden @ weight.T, targets), hidden, weight)
    got = _value_and_grads(lambda: chunked_ce_sum(hidden, weight, targets, chunk), hidden, weight)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert got[0].dtype == torch.float32


def test_standard_head_matches_token_ce_sum():
    hidden, weight, targets = _inputs(9)
    labels = torch.cat([torch.tensor([-100]), targets])[None]   # position t predicts labels[t+1]
    logits = torch.cat([hidden @ weight.T, torch.zeros(1, V)])[None]
    torch.testing.assert_close(ce_sum(hidden @ weight.T, targets), token_ce_sum(logits, labels))


def test_grad_output_scale_reaches_both_grads():
    hidden, weight, targets = _inputs(11)
    want = _value_and_grads(lambda: ce_sum(hidden @ weight.T, targets), hidden, weight, 0.37)
    got = _value_and_grads(lambda: chunked_ce_sum(hidden, weight, targets, 4), hidden, weight, 0.37)
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_tied_weight_accumulates_with_its_other_use():
    """The lm_head weight is also the input embedding: both uses add into one .grad."""
    gen = torch.Generator().manual_seed(2)
    table = torch.nn.Parameter(torch.randn(V, H, generator=gen))
    mix = torch.nn.Parameter(torch.randn(H, H, generator=gen) / H ** 0.5)
    ids = torch.randint(0, V, (13,), generator=gen)
    targets = torch.randint(0, V, (13,), generator=gen)

    def run(head):
        table.grad = mix.grad = None
        hidden = torch.tanh(table[ids] @ mix)
        (head(hidden) * 0.5).backward()
        return table.grad.clone(), mix.grad.clone()

    want = run(lambda h: ce_sum(h @ table.T, targets))
    got = run(lambda h: chunked_ce_sum(h, table, targets, 5))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_bf16_within_bf16_tolerance():
    hidden32, weight32, targets = _inputs(50)
    want = _value_and_grads(lambda: ce_sum(hidden32 @ weight32.T, targets), hidden32, weight32)
    hidden, weight = (hidden32.detach().bfloat16().requires_grad_(),
                      torch.nn.Parameter(weight32.detach().bfloat16()))
    got = _value_and_grads(lambda: chunked_ce_sum(hidden, weight, targets, 8), hidden, weight)
    assert got[0].dtype == torch.float32
    assert got[1].dtype == got[2].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], want[0], rtol=2e-2, atol=0)
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g.float(), w, rtol=5e-2, atol=5e-2)


def test_bf16_grads_take_the_scale_unrounded():
    """A scale like the trainer's (world * accum / tokens) must not be rounded to bf16 first."""
    hidden, weight, targets = _inputs(20, torch.bfloat16)
    scale = 16 / 12345
    _, h1, w1 = _value_and_grads(lambda: chunked_ce_sum(hidden, weight, targets, 8), hidden, weight)
    _, hs, ws = _value_and_grads(lambda: chunked_ce_sum(hidden, weight, targets, 8), hidden, weight, scale)
    assert torch.equal(hs, (h1.float() * scale).bfloat16())
    assert torch.equal(ws, (w1.float() * scale).bfloat16())


def test_no_grad_returns_the_value_and_keeps_no_grads():
    hidden, weight, targets = _inputs(10)
    with torch.no_grad():
        loss = chunked_ce_sum(hidden, weight, targets, 3)
    assert loss.grad_fn is None and not loss.requires_grad
    torch.testing.assert_close(loss, ce_sum(hidden @ weight.T, targets).detach())
    assert hidden.grad is None and weight.grad is None


def test_frozen_weight_gets_no_grad():
    hidden, weight, targets = _inputs(10)
    weight.requires_grad_(False)
    chunked_ce_sum(hidden, weight, targets, 3).backward()
    want = torch.autograd.grad(ce_sum(hidden @ weight.T, targets), hidden)[0]
    torch.testing.assert_close(hidden.grad, want, rtol=1e-5, atol=1e-6)
    assert weight.grad is None


def test_backward_twice_is_a_clear_error():
    hidden, weight, targets = _inputs(4)
    loss = chunked_ce_sum(hidden, weight, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_bad_shapes_and_dtypes_say_what_they_got():
    hidden, weight, targets = _inputs(4)
    with pytest.raises(ValueError, match=r"weight \[V, h\].*\(4, 16\), \(16, 37\)"):
        chunked_ce_sum(hidden, weight.T, targets)
    with pytest.raises(ValueError, match="cast hidden"):
        chunked_ce_sum(hidden.double(), weight, targets)
    with pytest.raises(ValueError, match="chunk_tokens must be >= 0"):
        chunked_ce_sum(hidden, weight, targets, -1)


@pytest.mark.parametrize("n, h, v, want", [(4096, 2048, 32000, 512), (4096, 4096, 32000, 1024),
                                           (100, 64, 32000, 64), (0, 4096, 32000, 64),
                                           (8192, 4096, 128256, 512)])
def test_auto_chunk_tokens(n, h, v, want):
    assert auto_chunk_tokens(n, h, v) == want
