"""Loss over response tokens, summed (the trainer divides by the step's token count).

Two heads give the same value and gradients:

- ``ce_sum(hidden @ W.T, targets)``: the standard head; autograd keeps the
  full ``[n, V]`` logits (and their softmax) alive until backward.
- ``chunked_ce_sum(hidden, W, targets)``: a fused linear + cross-entropy that
  walks the tokens in chunks and computes both gradients during forward, so
  only one ``[chunk, V]`` block of logits ever exists. Between forward and
  backward it holds just ``grad_hidden`` ``[n, h]`` and ``grad_weight``
  ``[V, h]``. Works on a ZeRO-3 partitioned lm_head weight, tied or not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


def token_ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy where ``labels != -100``; position t predicts ``labels[t+1]``.

    Computed in fp32 whatever the model dtype. Summing (not averaging) lets the
    caller normalise by every response token of the optimizer step, across
    micro-batches and ranks.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def ce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of cross-entropy of ``logits [n, V]`` against ``targets [n]``, in fp32.

    The caller passes response positions only, so nothing is ignored. With
    ``n == 0`` it returns 0 and its backward gives zero gradients.
    """
    return F.cross_entropy(logits.float(), targets, reduction="sum")


@dataclass(frozen=True)
class LogitTransform:
    """What a causal LM's forward does to ``hidden @ W.T`` before its loss.

    ``logits = cap * tanh(scale * z / cap)`` with ``z = hidden @ W.T``;
    ``scale`` 1 and ``cap`` None leave them alone. Read from the config keys
    transformers' ``*ForCausalLM.forward`` reads: Cohere's ``logit_scale``
    (logits * scale), Granite's ``logits_scaling`` (logits / it), Gemma-2/3's
    ``final_logit_softcapping`` (cap * tanh(logits / cap)).
    """
    scale: float = 1.0
    cap: float | None = None

    @classmethod
    def from_config(cls, cfg) -> "LogitTransform":
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        scale = float(get("logit_scale") or 1.0) / float(get("logits_scaling") or 1.0)
        cap = get("final_logit_softcapping")
        return cls(scale, float(cap) if cap else None)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """The transform applied to ``logits`` (any shape), as the model's forward does."""
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.cap:
            logits = torch.tanh(logits / self.cap) * self.cap
        return logits

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and not self.cap


def auto_chunk_tokens(n: int, hidden_size: int, vocab: int) -> int:
    """Tokens per chunk so one chunk's logits are about as large as the hidden states.

    Liger's rule: ``ceil(n * h / V)`` rounded up to a power of two, at least
    64. For 4,096 tokens, h = 4,096 and V = 32,000: ceil(524.3) = 525 → 1,024
    tokens, i.e. 4 chunks of ``[1024, 32000]`` logits.
    """
    want = max(1, math.ceil(n * hidden_size / vocab))
    return max(64, 1 << (want - 1).bit_length())


class _ChunkedLinearCE(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, both gradients; backward only scales them.

    ``weight`` arrives full-shape (gathered under ZeRO-3 before apply). The
    loss is the last op of the graph, so nothing is lost by differentiating
    eagerly; the incoming gradient (the trainer's loss scale, which DeepSpeed
    further divides by the accumulation steps) multiplies both gradients in
    backward, the step DeepSpeed's TiledFusedLogitsLoss misses for the weight.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int, grad_enabled: bool, transform: LogitTransform) -> torch.Tensor:
        # needs_input_grad says True under torch.no_grad too: the caller's grad mode decides
        want_h, want_w = (grad_enabled and need for need in ctx.needs_input_grad[:2])
        grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if want_h else None
        # fp32 accumulator: summing many chunks' bf16 products would lose the small ones
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.size(0), chunk):
            end = start + chunk
            loss += _chunk(hidden[start:end], weight, targets[start:end],
                           None if grad_h is None else grad_h[start:end], grad_w, transform)
        ctx.grads = (grad_h, None if grad_w is None else grad_w.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.grads is None:
            raise RuntimeError("chunked_ce_sum: backward ran twice on one forward; "
                               "retain_graph is not supported, call chunked_ce_sum again")
        grad_h, grad_w = ctx.grads
        ctx.grads = None  # scaled in place below: free them with the graph, never reuse them
        # grad_out stays fp32: a bf16 gradient times the fp32 0-dim tensor is computed in
        # fp32, while rounding the scale to bf16 first would bias every gradient by up to 0.4%
        if grad_h is not None:
            grad_h = grad_h.mul_(grad_out)
        if grad_w is not None:
            grad_w = grad_w.mul_(grad_out)
        return grad_h, grad_w, None, None, None, None


def _chunk(h_c: torch.Tensor, weight: torch.Tensor, t_c: torch.Tensor, grad_h_c: torch.Tensor | None,
           grad_w: torch.Tensor | None, transform: LogitTransform = LogitTransform()) -> torch.Tensor:
    """Loss of one chunk; writes its hidden gradient into `grad_h_c`, adds its weight gradient to `grad_w`.

    A function of its own so the ``[c, V]`` buffer is freed on return, before
    the next chunk allocates its own (a loop variable would keep two alive).
    With a soft-cap ``y = cap * tanh(s * z / cap)``, ``dy/dz = s * (1 - (y / cap)^2)``:
    a second ``[c, V]`` buffer holds that derivative until the gradient is formed.
    """
    t_c = t_c[:, None]
    # one [c, V] fp32 buffer, transformed in place: logits -> shifted -> exp -> softmax - onehot
    z = (h_c @ weight.T).float()
    slope = None
    if transform.scale != 1.0:
        z.mul_(transform.scale)
    if transform.cap:
        z.div_(transform.cap).tanh_()
        if grad_h_c is not None or grad_w is not None:
            slope = 1.0 - z.square()
        z.mul_(transform.cap)
    z.sub_(z.amax(dim=1, keepdim=True))
    z_target = z.gather(1, t_c)
    total = z.exp_().sum(dim=1, keepdim=True)
    loss = (total.log() - z_target).sum()
    if grad_h_c is None and grad_w is None:
        return loss
    z.div_(total).scatter_add_(1, t_c, torch.full_like(z_target, -1.0))
    if slope is not None:
        z.mul_(slope)
        del slope
    if transform.scale != 1.0:
        z.mul_(transform.scale)
    g = z if weight.dtype == torch.float32 else z.to(weight.dtype)
    if grad_h_c is not None:
        torch.mm(g, weight, out=grad_h_c)
    if grad_w is not None:
        if g.dtype == torch.float32:
            grad_w.addmm_(g.T, h_c)
        else:  # addmm_ wants one dtype: a low-precision product, added in fp32
            grad_w.add_(g.T @ h_c)
    return loss


def chunked_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   chunk_tokens: int = 0, transform: LogitTransform = LogitTransform()) -> torch.Tensor:
    """``ce_sum(transform(hidden @ weight.T), targets)`` without ever holding the ``[n, V]`` logits.

    `transform` is what the model's forward does to its logits
    (`LogitTransform.from_config`: soft-capping, scaling); without it a
    Gemma-2 loss would be that of uncapped logits.

    ``hidden`` is ``[n, h]`` (response positions only), ``weight`` the
    lm_head's ``[V, h]`` Parameter itself, ``targets`` ``[n]``. Under ZeRO-3
    it may be called inside the engine's forward or after it: a partitioned
    weight is gathered here for the forward and again for the moment its
    gradient is accumulated; the full-shape gradient reaches DeepSpeed's
    reduce hook through autograd, as a module's would. Tied weights work.
    ``chunk_tokens=0`` picks `auto_chunk_tokens`. The matmuls run in the
    input dtype, the softmax in fp32; the loss is fp32.

    Example (benchmarks/loss_memory.py, CPU): 4,096 tokens, h = 4,096,
    V = 32,000, fp32. The standard head peaks 1,514 MiB above its inputs
    (three ``[4096, 32000]`` buffers in log_softmax's backward); this one
    706 MiB: ``grad_weight`` 500, ``grad_hidden`` 64 and one ``[1024, 32000]``
    chunk of 125.

    Under ZeRO-3 every rank must call it, even with ``n == 0``: the gathers
    are collectives.
    """
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0 (0 = auto), got {chunk_tokens}")
    if hasattr(weight, "ds_id"):  # ZeRO-3: .data is an empty shell outside a gather
        import deepspeed  # its public ``deepspeed.zero`` namespace

        GatheredParameters, ZeroParamStatus = deepspeed.zero.GatheredParameters, deepspeed.zero.ZeroParamStatus

        if weight.ds_status == ZeroParamStatus.INFLIGHT:
            raise RuntimeError(f"chunked_ce_sum: the ZeRO-3 weight (ds_id {weight.ds_id}) is still being "
                               "gathered by a prefetch; call it after the model's forward has returned")
        if weight.ds_status == ZeroParamStatus.NOT_AVAILABLE:
            # Gathered around apply, not inside forward: autograd records the weight's
            # gradient edge, and the shape it accepts, when apply is called.
            with GatheredParameters([weight], modifier_rank=None):
                loss = _apply(hidden, weight, targets, chunk_tokens, transform)
            if loss.grad_fn is not None and loss.grad_fn.next_functions[1][0] is not None:
                _gathered_while_accumulating(loss.grad_fn.next_functions[1][0], weight)
            return loss
        # AVAILABLE: DeepSpeed gathered it. Read inside the engine's forward, the weight
        # became an external parameter of the running module, which DeepSpeed gathers
        # again in that module's backward, so its gradient accumulates as usual.
    return _apply(hidden, weight, targets, chunk_tokens, transform)


def _gathered_while_accumulating(accumulate: torch.autograd.graph.Node, weight: torch.nn.Parameter) -> None:
    """Have the ZeRO-3 `weight` gathered while autograd accumulates its gradient.

    AccumulateGrad copies a new gradient into the layout of the parameter as it
    is at that moment; a partitioned weight is a 0-element shell, so the copy
    of a ``[V, h]`` gradient fails ("size of tensor a (0) must match ...").
    DeepSpeed gathers a module's weights in that module's backward; a weight
    read outside any module (here, after the engine's forward) has nobody to
    do it, so it is gathered just before its AccumulateGrad runs and
    partitioned right after (DeepSpeed's reduce hook runs in between). When
    DeepSpeed already holds it there (a tied embedding), nothing is done.
    """
    import deepspeed

    ZeroParamStatus = deepspeed.zero.ZeroParamStatus

    by_us = {"gathered": False}

    def gather(_grads):
        if weight.ds_status == ZeroParamStatus.NOT_AVAILABLE:
            weight.all_gather()  # a collective: every rank runs the same backward graph
            by_us["gathered"] = True

    def release(_grad_inputs, _grad_outputs):
        if by_us.pop("gathered", False) and not weight.ds_active_sub_modules:
            weight.partition()

    accumulate.register_prehook(gather)
    accumulate.register_hook(release)


def _apply(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
           chunk_tokens: int, transform: LogitTransform = LogitTransform()) -> torch.Tensor:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.size(1) != weight.size(1) \
            or targets.shape != hidden.shape[:1]:
        raise ValueError(f"chunked_ce_sum wants hidden [n, h], weight [V, h], targets [n]; got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"chunked_ce_sum: hidden is {hidden.dtype} but weight is {weight.dtype}; "
                         "cast hidden to the lm_head's dtype")
    chunk = chunk_tokens or auto_chunk_tokens(hidden.size(0), weight.size(1), weight.size(0))
    return _ChunkedLinearCE.apply(hidden, weight, targets, chunk, torch.is_grad_enabled(), transform)


def chunked_refusal(cfg) -> str | None:
    """Why the chunked head would not reproduce the logits of `cfg`'s model; None when it does.

    `LogitTransform` knows the transforms of the families transformers ships
    today; a model whose forward does something else to its logits must not
    silently train on another loss. The architecture is built shrunk (width
    16, two layers, `medtune.models.families.shrunk`, weights of scale 1 so a
    soft-cap bites) on the CPU, and its own logits are compared with
    ``transform(hidden @ W.T)`` on 8 tokens. Takes a second or two.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from medtune.models.families import shrunk

    small = shrunk(cfg, hidden=16, heads=2, head_dim=8, vocab=64, layers=2, initializer_range=1.0)
    tiny_cfg = AutoConfig.for_model(**small)
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(tiny_cfg, attn_implementation="eager").eval()
    ids = torch.arange(8).unsqueeze(0) % tiny_cfg.vocab_size
    with torch.no_grad():
        out = net(input_ids=ids, use_cache=False, output_hidden_states=True)
        mine = LogitTransform.from_config(tiny_cfg)(out.hidden_states[-1] @ net.get_output_embeddings().weight.T)
    gap = (mine - out.logits).abs().max().item()
    if gap <= 1e-4 * max(1.0, out.logits.abs().max().item()):
        return None
    return (f"kernels.loss = chunked cannot reproduce the logits of model_type {small.get('model_type')}'s "
            f"forward (they differ by {gap:.3g} on a shrunk copy); use kernels.loss=standard")
