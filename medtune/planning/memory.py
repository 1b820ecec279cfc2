"""``medtune plan``: will a recipe fit, per GPU, on N nodes of G GPUs?

Model states (parameters, gradients, optimizer) come from DeepSpeed's own
ZeRO-3 estimator, ``estimate_zero3_model_states_mem_needs``: 18 bytes per
parameter spread over every GPU, plus one gathered layer (4 bytes per
parameter of the largest layer); with the optimizer offloaded only the
2-byte parameter shard stays on the GPU, with parameters offloaded too only
the gathered layer. We show the split as bf16 parameters (2 B), bf16
gradients (2 B + 2 B of reduction buffers, DeepSpeed's 18 - 16) and AdamW's
fp32 master weights and moments (12 B).

Activations are medtune's estimate for one packed row of ``max_tokens``
tokens (T) in bf16 (Korthikanti et al. 2022, with FlashAttention-style
kernels that never store the T x T scores): ``T (16 h + 4.5 i)`` bytes per
layer for hidden size h and MLP width i (``34 T h`` when i = 4h); with
activation checkpointing only each layer's input (``2 T h``) is kept, plus
one layer being recomputed. The standard loss head holds at most ``10 T V``
bytes (bf16 logits, fp32 log-probabilities and their gradient; medtune
projects only the response positions, so this is an upper bound); the
chunked head (``kernels.loss: chunked``) holds ``4 V h`` (the fp32 weight
gradient it accumulates) ``+ 2 T h + 6 C V`` for chunks of
C = `auto_chunk_tokens` tokens. 2 GiB per GPU are kept
for the CUDA context, NCCL buffers and fragmentation.
"""
from __future__ import annotations

from dataclasses import dataclass

GiB = 1024 ** 3
OVERHEAD = 2 * GiB


@dataclass(frozen=True)
class Shape:
    params: int
    largest_layer: int
    hidden: int
    intermediate: int
    layers: int
    vocab: int


@dataclass(frozen=True)
class Row:
    setting: str
    params: float
    grads: float
    optimizer: float
    states: float
    """Model states on the GPU from DeepSpeed's estimator (bytes)."""
    activations: float
    cpu: float
    """Host memory per node DeepSpeed's estimator asks for (bytes)."""

    @property
    def total(self) -> float:
        return self.states + self.activations + OVERHEAD


def model_shape(cfg) -> Shape:
    """Parameter counts of a transformers config, from a model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in net.parameters())  # shared (tied) tensors once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in net.modules())
    return Shape(total, largest, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers,
                 cfg.vocab_size)


def activations(shape: Shape, tokens: int, checkpointing: bool, loss: str = "standard") -> float:
    per_layer = tokens * (16 * shape.hidden + 4.5 * shape.intermediate)
    if loss == "chunked":
        from medtune.kernels.loss import auto_chunk_tokens

        chunk = auto_chunk_tokens(tokens, shape.hidden, shape.vocab)
        head = 4 * shape.vocab * shape.hidden + 2 * tokens * shape.hidden + 6 * chunk * shape.vocab
    else:
        head = 10 * tokens * shape.vocab
    if checkpointing:
        return shape.layers * 2 * tokens * shape.hidden + per_layer + head
    return shape.layers * per_layer + head


def rows(shape: Shape, nodes: int, gpus_per_node: int, tokens: int, loss: str = "standard") -> list[Row]:
    from medtune.engine.ds_compat import zero3_model_states_mem_needs

    n = nodes * gpus_per_node
    p = shape.params
    out = []
    for setting, offload_opt, offload_params, ckpt in (
            ("no offload", False, False, False),
            ("no offload + act. ckpt", False, False, True),
            ("offload optimizer + act. ckpt", True, False, True),
            ("offload optimizer+params + act. ckpt", True, True, True)):
        cpu, gpu = zero3_model_states_mem_needs(p, shape.largest_layer, gpus_per_node, nodes,
                                                cpu_offload=offload_opt, cpu_offload_params=offload_params)
        params = 0 if offload_params else 2 * p / n
        grads = 0 if offload_opt else 4 * p / n
        optim = 0 if offload_opt else 12 * p / n
        out.append(Row(setting, params, grads, optim, gpu, activations(shape, tokens, ckpt, loss), cpu))
    return out


def smallest_nodes(shape: Shape, gpus_per_node: int, tokens: int, gpu_mem: float,
                   checkpointing: bool, limit: int = 128, loss: str = "standard") -> int | None:
    """Fewest nodes on which the recipe's own setting (no offload) fits, or None."""
    for nodes in range(1, limit + 1):
        row = rows(shape, nodes, gpus_per_node, tokens, loss)[1 if checkpointing else 0]
        if row.total <= gpu_mem:
            return nodes
    return None


def table(recipe, shape: Shape, nodes: int, gpus_per_node: int, gpu_mem_gib: float) -> str:
    tokens = recipe.data.max_tokens
    loss = recipe.kernels.loss
    gpu_mem = gpu_mem_gib * GiB
    g = lambda b: f"{b / GiB:7.1f}"  # noqa: E731
    lines = [f"{recipe.model.name_or_path or recipe.name}: {shape.params / 1e9:.2f}B parameters "
             f"(largest layer {shape.largest_layer / 1e6:.0f}M), {nodes} x {gpus_per_node} GPUs of "
             f"{gpu_mem_gib:g} GiB, packed rows of {tokens} tokens, {loss} loss head",
             "", f"{'per GPU, GiB':<38}{'params':>7}{'grads':>7}{'optim':>7}{'states':>8}"
                 f"{'activ.':>8}{'total':>8}  fits   host/node",
             "-" * 100]
    for r in rows(shape, nodes, gpus_per_node, tokens, loss):
        fits = "yes" if r.total <= gpu_mem else "NO"
        lines.append(f"{r.setting:<38}{g(r.params)}{g(r.grads)}{g(r.optimizer)} {g(r.states)} "
                     f"{g(r.activations)} {g(r.total)}  {fits:<5}{g(r.cpu)}")
    ckpt = recipe.model.gradient_checkpointing
    best = smallest_nodes(shape, gpus_per_node, tokens, gpu_mem, ckpt, loss=loss)
    mine = rows(shape, nodes, gpus_per_node, tokens, loss)[1 if ckpt else 0]
    lines += ["", f"the recipe (no offload, activation checkpointing {'on' if ckpt else 'off'}) "
                  f"needs {mine.total / GiB:.1f} GiB per GPU: "
                  f"{'fits' if mine.total <= gpu_mem else 'does NOT fit'} on {nodes} x {gpus_per_node}; "
                  + (f"smallest node count that fits: {best}" if best else
                     "no node count up to 128 fits: turn on offload or checkpointing")]
    return "\n".join(lines)
