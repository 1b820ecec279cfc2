"""The start-up isolation probe: does this attention path keep a packed row's samples apart, here?

Packing is exact only while no sample of a row attends to another. Whether it
does depends on more than medtune's code: transformers decides from
``position_ids`` (and from the attention implementation's name) whether a
row is packed, and that logic changes between releases. So before the first
step every run checks it in *this* environment, with the installed
transformers and torch: a tiny copy of the run's model family (two layers,
hidden size 64) computes the logits of one packed row of three samples and of
each sample alone through the same attention implementation; any difference
beyond rounding means the samples see each other, and the run is refused::

    attention probe failed: flex_attention lets the samples of a packed row attend to each
    other (max logit difference 0.41 on 3 samples of 7/1/11 tokens) with transformers 5.24.0 and
    torch 2.13.0; choose another kernels.attention or install the versions in constraints.txt

The probe never touches the training RNG (it runs inside `torch.random.fork_rng`)
and must run before `HfDeepSpeedConfig` exists (otherwise transformers would
build the tiny model inside ``zero.Init``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from medtune.base.errors import UserError

LENGTHS = (7, 1, 11)
"""Samples of the probe row: a one-token sample and a row shorter than any sliding window."""
_SIZES = dict(hidden=64, intermediate=128, heads=4, head_dim=16, vocab=256)
_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, vocab_size=256, initializer_range=0.2)
"""The probe's Llama, for a family whose config cannot be shrunk or built."""
# bf16/fp16 round each logit to ~3 significant digits; a leak moves them by tenths
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
_LOW_PRECISION_TOLERANCE = 3e-2


@dataclass(frozen=True)
class ProbeResult:
    """What the probe measured."""
    implementation: str
    max_difference: float
    """Largest |packed - alone| over every logit of every sample, relative to the largest |alone|."""
    tolerance: float
    family: str
    """The ``model_type`` the probe model was built as (``llama`` when the run's could not be)."""

    @property
    def isolated(self) -> bool:
        return self.max_difference <= self.tolerance


class IsolationError(UserError):
    """The attention path lets the samples of a packed row see each other."""


def tiny_config(hf_config):
    """A two-layer, 64-wide copy of `hf_config` (same family, windows and soft-caps kept).

    Shrunk by `medtune.models.families.shrunk` (layer-type lists such as Gemma-3's
    local/global pattern cut to the two layers kept); a sliding window
    shorter than the probe's longest sample is widened to it (the probe
    checks isolation, not the window). Raises nothing: a family whose config
    cannot be shrunk gets a tiny Llama (`probe` says so in its result).
    """
    from transformers import AutoConfig

    from medtune.models.families import shrunk

    try:
        cfg = shrunk(hf_config, **_SIZES, layers=2, initializer_range=0.2, use_cache=False)
        window = cfg.get("sliding_window")
        if isinstance(window, int) and window < max(LENGTHS):
            cfg["sliding_window"] = max(LENGTHS)
        return AutoConfig.for_model(**cfg)
    except Exception:  # noqa: BLE001 (an exotic config: fall back to a family transformers surely has)
        return _tiny_llama()


def _tiny_llama():
    from transformers import AutoConfig

    return AutoConfig.for_model("llama", **_TINY)


def probe(hf_config, implementation: str, inputs_for, device, dtype) -> ProbeResult:
    """Run the probe row through a tiny model of `hf_config`'s family.

    `implementation` is the ``attn_implementation`` name transformers knows;
    ``inputs_for(lengths)`` returns the model call's keyword arguments for a
    row of samples of those lengths, exactly as training builds them (minus
    ``input_ids``), so the probe sees what the trainer sees. `dtype` sets the
    tolerance: 1e-4 relative in fp32, 3e-2 in bf16/fp16 (a leak measured here
    moves logits by tenths). Does not advance any RNG the caller sees.
    """
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(hf_config)
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(0)
        try:
            net = AutoModelForCausalLM.from_config(cfg, attn_implementation=implementation, dtype=dtype)
        except Exception:  # noqa: BLE001 (a family the tiny shape does not suit)
            cfg = _tiny_llama()
            net = AutoModelForCausalLM.from_config(cfg, attn_implementation=implementation, dtype=dtype)
        net = net.to(device).eval()
        ids = torch.randint(3, cfg.vocab_size, (sum(LENGTHS),))
        packed = net(input_ids=ids[None].to(device), **inputs_for(LENGTHS)).logits[0].float()
        worst, scale, start = 0.0, 0.0, 0
        for n in LENGTHS:
            alone = net(input_ids=ids[None, start:start + n].to(device), **inputs_for((n,))).logits[0].float()
            worst = max(worst, (packed[start:start + n] - alone).abs().max().item())
            scale = max(scale, alone.abs().max().item())
            start += n
    tol = _TOLERANCE.get(dtype, _LOW_PRECISION_TOLERANCE)
    return ProbeResult(implementation, worst / max(scale, 1e-12), tol, cfg.model_type)


def check(hf_config, backend: str, implementation: str, inputs_for, device, dtype) -> ProbeResult:
    """`probe`, raising `IsolationError` with one line naming the backend and versions on a leak."""
    import transformers

    result = probe(hf_config, implementation, inputs_for, device, dtype)
    if not result.isolated:
        shape = "/".join(str(n) for n in LENGTHS)
        raise IsolationError(
            f"attention probe failed: {backend} lets the samples of a packed row attend to each other "
            f"(relative logit difference {result.max_difference:.3g} > {result.tolerance:g} on samples of "
            f"{shape} tokens, {result.family} family) with transformers {transformers.__version__} and "
            f"torch {torch.__version__}; choose another kernels.attention or install the versions in "
            "constraints.txt")
    return result
