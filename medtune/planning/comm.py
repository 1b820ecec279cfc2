"""What ZeRO-3 sends per optimizer step, over which links, and how long it takes.

Counts the collectives DeepSpeed 0.19.8 issues for a model, so ``medtune
plan`` can print them beside the compute time (`traffic`, `table`); the
recipe's own choices are resolved by `medtune.engine.hierarchy`. Nothing here imports DeepSpeed; the
counting imports torch and transformers only to read a model's modules.

How DeepSpeed 0.19.8 communicates under ZeRO-3 (read in its source, paths
under ``deepspeed/runtime/``, then checked call by call with its comms
logger on 4 CPU ranks):

* **Parameters** are all-gathered by the parameter coordinator
  (``zero/partitioned_param_coordinator.py``) when a module runs, in the
  forward and again in the backward. After the first forward+backward it
  follows a recorded module trace, prefetching up to
  ``stage3_prefetch_bucket_size`` elements at every module it enters
  (bounded by ``stage3_max_live_parameters`` gathered at once). A module's
  parameters stay gathered after it ran if they are used again within
  ``stage3_max_reuse_distance`` elements of the trace, or if the prefetcher
  already walked past their next use while they were gathered
  (``__params_to_release``, coordinator:634). With medtune's 1e9-element
  window a 7B model keeps its last few layers from the forward into the
  backward; a tiny test model keeps everything and its backward gathers
  nothing. `simulate` replays that coordinator over the model's module
  trace (`model_trace`), so B below is counted, not guessed.
* Parameters of at most ``stage3_param_persistence_threshold`` elements
  (norms) are never released while training, but the optimizer step
  partitions everything (``zero/stage3.py:2878``) and gathers them again
  over all ranks (``_post_step``, stage3.py:2840): Q elements per step.
* **Gradients** are reduce-scattered over all ranks after *every* backward,
  i.e. once per micro-batch, not once per optimizer step: the gradient hooks
  fire on each backward (stage3.py:1515) and each micro-batch's partition is
  added to the accumulated one (stage3.py:2024). Persistent parameters'
  gradients too.
* **hpZ** (``zero_hpz_partition_size`` = h): when a gathered parameter is
  released, a secondary shard of 1/h of it is kept
  (``_partition_param_sec``, ``zero/partition_parameters.py:1900``), and a
  gather of a parameter that has one runs within its group of h consecutive
  ranks, one node with DeepSpeed's rank layout (partition_parameters.py:1571).
  The secondary shards are dropped after every optimizer step
  (``invalidate_secondary_tensor``, stage3.py:2846), so only the first
  forward of an optimizer step gathers across nodes: the backward and every
  later micro-batch gather within the node. Gradients are unchanged.
* **qwZ** (``zero_quantized_weights``): every all-gather moves int8 plus one
  fp32 scale per group of at most 8,000 elements (``CUDAQuantizer``,
  partition_parameters.py:857) instead of bf16: about half the bytes.
* **qgZ** (``zero_quantized_gradients``, more than one node): each gradient
  of 2 or more dimensions whose size E is a multiple of 2W is quantized to
  int4 and reduced by two all-to-alls, E/2 bytes within the node, then
  E/(2l) across nodes (``all_to_all_quant_reduce``,
  ``comm/coalesced_collectives.py:31``); other tensors, and any run on one
  node, keep the reduce-scatter. Both are CUDA kernels: on CPU qwZ fails at
  model construction ("This op had not been implemented on CPU backend").

Per optimizer step and per GPU, with A micro-batches per rank, W = n·l
ranks (n nodes of l GPUs), hpZ group h, G = the elements a forward gathers
(non-persistent parameters, each padded to a multiple of W), B = the
elements the backward gathers again (G minus what stays gathered), Q =
persistent elements, R = all gradient elements (padded to W). In elements
of whole tensors, each a collective over the named group::

    flat ZeRO-3   all-gather over W     A·(G + B) + Q
                  reduce-scatter over W A·R
    hpZ (h)       all-gather over W     G + Q
                  all-gather within h   B + (A − 1)·(G + B)
                  reduce-scatter over W A·R
    + qwZ         every all-gather at 1 byte per element (+4 bytes / 8,000)
    + qgZ         the eligible part E of A·R as int4 all-to-alls: E/2 bytes
                  within the node, then E/(2l) across nodes

(the first optimizer step of a run differs: DeepSpeed records the trace
during the first forward+backward and gathers everything twice then.)

Bytes on the wire per GPU, for a collective over g ranks on k nodes whose
whole tensor is S bytes, as NCCL's rings move it (every ring crosses each
node boundary once, and a node sends through all its NICs)::

    all-gather, reduce-scatter   (g−1)/g·S, of which inter-node (g−1)/g·S/(g/k) when k > 1
    all-to-all                   (g−1)/g·S

Time: the inter-node bytes of a node's GPUs at the node's bandwidth
(``--inter-node-gbps``, Gb/s for the whole node), the intra-node bytes at
the NVLink bandwidth of one GPU (``--intra-node-gbps``), a collective taking
the longer of the two. Compute: 6 × the linear weights × the tokens of one
GPU's step (`medtune.models.flops.FlopModel`; 8 × with activation checkpointing;
the attention of short instruction samples adds about 1%) at ``mfu`` × the
dense bf16 peak. DeepSpeed
overlaps both, so a step takes about the longer one: the bottleneck.

DeepSpeed's comms logger (``--comm-log``) records each call's *input*: S/g
for an all-gather, S for a reduce-scatter; `Traffic.logged` predicts those
per-rank totals, which a ``--comm-log`` run reproduces (a test holds them
within 10%, measured exact on CPU).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass
from typing import Any

from medtune.base.errors import UserError
from medtune.engine.hierarchy import hierarchy_size

GB = 1e9
QWZ_SCALE_BYTES = 4 / 8000
"""qwZ's fp32 scale per quantization group of at most 8,000 elements (a lower bound)."""
NVLINK_GBPS = {"a100": 600 * 8, "h100": 900 * 8, "h200": 900 * 8}
"""NVLink bandwidth of one GPU in Gb/s (NVIDIA's 600 and 900 GB/s, both directions together)."""
GPU_MEMORY_GIB = {"a100": 80.0, "h100": 80.0, "h200": 141.0}
GPU_PEAK = {"a100": "A100", "h100": "H100 SXM", "h200": "H200"}
"""Keys of `medtune.models.flops.PEAK_TFLOPS` for ``--gpu``."""
ALL_GATHER_OPS = ("all_gather_into_tensor", "all_gather")
REDUCE_SCATTER_OPS = ("reduce_scatter_tensor", "reduce_scatter")


# --------------------------------------------------------------------------
# The module trace DeepSpeed's hooks see, and its coordinator replayed on it
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelTrace:
    """One forward and backward as ZeRO-3's module hooks see them."""
    numel: tuple[int, ...]
    """Elements of each parameter (a shared tensor once)."""
    ndim: tuple[int, ...]
    modules: tuple[tuple[int, ...], ...]
    """Each module's own parameters (indices into `numel`)."""
    events: tuple[tuple[str, int, bool], ...]
    """``(fetch|release, module, forward)`` in the order the hooks fire."""


def model_trace(cfg, checkpointing: bool = False) -> ModelTrace:
    """The trace of a transformers causal LM config.

    The call order comes from running the same architecture shrunk to
    width 16 (same layers, same module names) on a few tokens on CPU; the
    sizes from the real config built on the meta device. The backward visits
    a module before its children, children in reverse, and skips modules
    whose output needs no gradient (rotary embeddings), as DeepSpeed's
    backward hooks do; with (non-reentrant) activation checkpointing each
    decoder layer replays its children's forwards inside its backward.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        real = AutoModelForCausalLM.from_config(cfg)
    index: dict[int, int] = {}
    numel, ndim = [], []
    for p in real.parameters():  # shared tensors once, as DeepSpeed partitions them
        index[id(p)] = len(numel)
        numel.append(p.numel())
        ndim.append(p.dim())
    names = [n for n, _ in real.named_modules(remove_duplicate=False)]
    mod_params = {n: tuple(sorted({index[id(p)] for p in m.parameters(recurse=False)}))
                  for n, m in real.named_modules(remove_duplicate=False)}
    order = {n: i for i, n in enumerate(names)}
    events = _events(_call_tree(cfg), order, checkpointing)
    return ModelTrace(tuple(numel), tuple(ndim), tuple(mod_params[n] for n in names), tuple(events))


def _call_tree(cfg) -> list:
    """One forward of `cfg`'s architecture shrunk to width 16: nested ``[name, children, output needs grad]``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tiny_cfg = AutoConfig.for_model(**_shrunk(cfg))
    torch.manual_seed(0)
    tiny = AutoModelForCausalLM.from_config(tiny_cfg, attn_implementation="eager").train()
    tiny_names = {id(m): n for n, m in tiny.named_modules(remove_duplicate=False)}
    calls: list[list] = []   # [name, children, output needs grad]
    stack: list[list] = [["<root>", [], True]]
    hooks = []
    for m in tiny.modules():
        def pre(mod, _args):
            node = [tiny_names[id(mod)], [], False]
            stack[-1][1].append(node)
            stack.append(node)

        def post(mod, _args, out):
            node = stack.pop()
            node[2] = any(t.requires_grad for t in _tensors(out))
        hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        ids = torch.arange(8).unsqueeze(0) % tiny_cfg.vocab_size
        tiny(input_ids=ids, use_cache=False).logits.sum()
    finally:
        for h in hooks:
            h.remove()
    (root,) = stack[0][1]
    return root


def _events(root: list, order: dict[str, int], checkpointing: bool) -> list[tuple[str, int, bool]]:
    """The fetch/release events of DeepSpeed's hooks over the call tree `root`, forward then backward."""
    events: list[tuple[str, int, bool]] = []

    def forward(node, out):
        out.append(("fetch", order[node[0]], True))
        for child in node[1]:
            forward(child, out)
        out.append(("release", order[node[0]], True))

    def backward(node, out):
        if not node[2]:
            return
        out.append(("fetch", order[node[0]], False))
        if checkpointing and _is_layer(node[0]):
            recompute(node, out)
        else:
            for child in reversed(node[1]):
                backward(child, out)
        out.append(("release", order[node[0]], False))

    def recompute(layer, out):
        # Non-reentrant checkpointing, as measured: the backward enters the layer down to the
        # first module it needs (mlp, down_proj); that unpacks a saved tensor, which replays the
        # children's forwards and stops right after the last one that saves a tensor (torch's
        # early stop), so that module and its parents get no forward release; then the rest
        # of the backward.
        path, node = [], layer
        while kids := [c for c in reversed(node[1]) if c[2]]:
            node = kids[0]
            path.append(("fetch", order[node[0]], False))
        out += path
        replay: list = []
        for child in layer[1]:
            forward(child, replay)
        last = max(i for i, e in enumerate(replay) if e == ("fetch", path[-1][1], True)) if path else -1
        out += replay[:last + 1]
        rest: list = []
        for child in reversed(layer[1]):
            backward(child, rest)
        for event in path:
            rest.remove(event)
        out += rest
    forward(root, events)
    backward(root, events)
    return events


def _is_layer(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1].isdigit() and parts[-2] == "layers"


def _tensors(out):
    import torch

    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return [t for t in getattr(out, "__dict__", {}).values() if torch.is_tensor(t)]


def _shrunk(cfg) -> dict:
    """The config with every width shrunk to 16 (layer count and structure kept)."""
    from medtune.models.families import shrunk

    return shrunk(cfg, hidden=16, heads=2, head_dim=8, vocab=64)


@dataclass(frozen=True)
class Knobs:
    """The DeepSpeed ZeRO-3 settings that decide what is gathered when."""
    prefetch_bucket: int
    max_live: int
    max_reuse: int
    persistence_threshold: int

    @classmethod
    def from_ds(cls, zero: dict) -> "Knobs":
        return cls(int(zero["stage3_prefetch_bucket_size"]), int(zero["stage3_max_live_parameters"]),
                   int(zero["stage3_max_reuse_distance"]), int(zero["stage3_param_persistence_threshold"]))


def simulate(trace: ModelTrace, knobs: Knobs, world: int, hpz: int, accum: int,
             steps: int = 3) -> list[Counter]:
    """Per optimizer step, the elements each rank hands to each kind of collective.

    Keys: ``gather_world`` / ``gather_node`` (input shards of all-gathers over
    all ranks or within an hpZ group) and ``reduce_world`` (whole gradient
    tensors); the comms logger's convention. A replay of
    ``PartitionedParameterCoordinator`` (fetch, prefetch, release with the
    reuse window and the prefetcher's marks, the trace recorded in the first
    pass) and of the optimizer step (everything released, persistent
    parameters gathered again, hpZ's secondary shards dropped).
    """
    replay = _Replay(trace, knobs, world, hpz)
    out = []
    for _ in range(steps):
        replay.tally = Counter()
        for _micro in range(accum):
            replay.micro_batch()
        replay.optimizer_step()
        out.append(replay.tally)
    return out


class _Replay:
    """`simulate`'s state: which parameters are gathered, by whom, and the coordinator's trace."""

    def __init__(self, trace: ModelTrace, knobs: Knobs, world: int, hpz: int):
        n = len(trace.numel)
        self.trace, self.knobs, self.world, self.hpz = trace, knobs, world, hpz
        self.numel = trace.numel
        self.aligned = [math.ceil(e / world) * world for e in self.numel]
        self.persistent = [e <= knobs.persistence_threshold for e in self.numel]
        self.gathered = [False] * n
        # deepspeed.initialize gathers and releases every parameter once, which leaves
        # each an hpZ secondary shard for the first optimizer step
        self.secondary = [hpz > 1] * n
        self.users: list[set] = [set() for _ in range(n)]
        self.recorded: list[int] = []
        self.param_order: list[tuple[int, int]] = []
        self.mode = "invalid"
        self.cache: dict[tuple[int, int], set] = {}  # DeepSpeed memoizes __params_to_release per (module, step)
        self.live = 0
        self.tally = Counter()

    def gather(self, ps) -> None:
        for p in ps:
            if self.gathered[p]:
                continue
            self.gathered[p] = True
            self.live += self.numel[p]
            if self.secondary[p]:
                self.tally["gather_node"] += self.aligned[p] // self.hpz
            else:
                self.tally["gather_world"] += self.aligned[p] // self.world

    def release(self, p: int) -> None:
        if self.gathered[p] and not self.users[p]:
            if self.hpz > 1:
                self.secondary[p] = True
            self.gathered[p] = False
            self.live -= self.numel[p]

    def to_release(self, m: int, sid: int, recent) -> set:
        key = (m, sid)
        if key not in self.cache:
            rel = {p for p in self.trace.modules[m] if not self.persistent[p] and recent[p] <= sid}
            walked = 0
            for mod in self.recorded[sid:]:
                if walked >= self.knobs.max_reuse:
                    break
                for p in self.trace.modules[mod]:
                    rel.discard(p)
                    walked += self.numel[p]
            self.cache[key] = rel
        return self.cache[key]

    def micro_batch(self) -> None:
        """One forward and backward: the trace recorded on the first, replayed with prefetch after."""
        if self.mode == "record":
            self.param_order = [(p, s) for s, m in enumerate(self.recorded) for p in self.trace.modules[m]]
            self.mode = "complete"
        elif self.mode == "invalid":
            self.mode = "record"
        queue = deque(self.param_order)
        recent: dict[int, int] = defaultdict(lambda: -10 ** 10)
        sid, self.live = 0, 0
        for kind, m, _fwd in self.trace.events:
            mine = self.trace.modules[m]
            if kind == "fetch":
                self.fetch(m, sid, queue, recent)
                sid += 1
            else:
                rel = self.to_release(m, sid, recent) if self.mode == "complete" else set(mine)
                for p in mine:
                    self.users[p].discard(m)
                    if p in rel:
                        self.release(p)
        self.tally["reduce_world"] += sum(self.aligned)

    def fetch(self, m: int, sid: int, queue: deque, recent) -> None:
        mine = self.trace.modules[m]
        if self.mode == "record":
            self.recorded.append(m)
        self.gather(mine)
        for p in mine:
            self.users[p].add(m)
        if self.mode == "complete":
            self.prefetch(mine, sid, queue, recent)

    def prefetch(self, mine, sid: int, queue: deque, recent) -> None:
        for _p in range(sum(1 for p in mine if recent[p] < sid)):
            if queue:
                p, s = queue.popleft()
                recent[p] = s
        budget = min(self.knobs.max_live - self.live, self.knobs.prefetch_bucket)
        ahead, taken = [], 0
        while queue and taken < budget:
            p, s = queue.popleft()
            recent[p] = max(recent[p], s)
            if not self.gathered[p] and p not in ahead:
                ahead.append(p)
                taken += self.numel[p]
        self.gather(ahead)

    def optimizer_step(self) -> None:
        """Everything partitioned, persistent parameters gathered again, secondary shards dropped."""
        n = len(self.numel)
        for p in range(n):
            self.users[p].clear()
            self.release(p)
        self.tally["gather_world"] += sum(self.aligned[p] // self.world for p in range(n) if self.persistent[p])
        for p in range(n):
            self.gathered[p] = self.persistent[p]
            self.secondary[p] = False


# --------------------------------------------------------------------------
# Bytes per link and time
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    name: str
    hpz: int
    qwz: bool = False
    qgz: bool = False


@dataclass(frozen=True)
class Traffic:
    """One setting's communication per optimizer step and GPU (bytes on the wire)."""
    setting: Setting
    gather_inter: float
    gather_intra: float
    reduce_inter: float
    reduce_intra: float
    seconds: float
    """Estimated communication time at the given bandwidths."""
    logged: dict[str, float]
    """Per-rank input bytes by collective, as DeepSpeed's comms logger counts them:
    ``all_gather`` (shards), ``reduce_scatter`` (whole tensors), ``all_to_all`` (qgZ)."""


@dataclass(frozen=True)
class Links:
    nodes: int
    gpus_per_node: int
    inter_gbps: float
    """The whole node's inter-node bandwidth, Gb/s."""
    intra_gbps: float
    """NVLink bandwidth of one GPU, Gb/s."""

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node


def _world_split(total: float, links: Links) -> tuple[float, float, float]:
    """(inter, intra, seconds) of collectives over all ranks moving `total` bytes per GPU."""
    if links.nodes == 1:
        return 0.0, total, total / (links.intra_gbps * GB / 8)
    inter = total / links.gpus_per_node
    intra = total - inter
    per_gpu_nic = links.inter_gbps * GB / 8 / links.gpus_per_node
    return inter, intra, max(inter / per_gpu_nic, intra / (links.intra_gbps * GB / 8))


def traffic(step: Counter, setting: Setting, trace: ModelTrace, links: Links, accum: int,
            weight_bytes: int, grad_bytes: int) -> Traffic:
    """Bytes per GPU and time of one optimizer step simulated by `simulate` for `setting`."""
    w, l, n = links.world, links.gpus_per_node, links.nodes
    wb = 1 + QWZ_SCALE_BYTES if setting.qwz else weight_bytes
    # an all-gather's whole tensor is its input shard times the group; a GPU receives (g-1)/g of it
    g_world = step["gather_world"] * w * wb * (w - 1) / w
    g_node = step["gather_node"] * setting.hpz * wb * (setting.hpz - 1) / setting.hpz
    gi, gl, gs = _world_split(g_world, links)
    gl += g_node
    gs += g_node / (links.intra_gbps * GB / 8)
    logged = {"all_gather": (step["gather_world"] + step["gather_node"]) * wb}
    reduce_elems = step["reduce_world"]
    ri = rl = rs = 0.0
    if setting.qgz and n > 1:
        eligible = accum * sum(math.ceil(e / w) * w for e, d in zip(trace.numel, trace.ndim)
                               if d >= 2 and e % (2 * w) == 0)
        reduce_elems -= eligible
        rl = eligible / 2 * (l - 1) / l          # int4 all-to-all within the node
        ri = eligible / (2 * l) * (n - 1) / n    # then across nodes, 1/l of it per GPU
        rs = ri / (links.inter_gbps * GB / 8 / l) + rl / (links.intra_gbps * GB / 8)
        logged["all_to_all"] = eligible / 2 + eligible / (2 * l)
    wi, wl, ws = _world_split(reduce_elems * grad_bytes * (w - 1) / w, links)
    logged["reduce_scatter"] = reduce_elems * grad_bytes
    return Traffic(setting, gi, gl, ri + wi, rl + wl, gs + rs + ws, logged)


@dataclass(frozen=True)
class CommPlan:
    rows: list[Traffic]
    compute_seconds: float
    tokens_per_gpu: int
    links: Links
    gpu: str
    mfu: float
    secondary_bytes: float
    """Memory per GPU of hpZ's secondary weight shards (bf16 or the training dtype)."""
    weight_bytes: int
    per_step: dict[str, list[dict[str, float]]]
    """Each setting's `Traffic.logged` for the first optimizer steps (the first records DeepSpeed's trace)."""


def plan(recipe, cfg, links: Links, gpu: str, mfu: float, trace: ModelTrace | None = None,
         steps: int = 3) -> CommPlan:
    """The communication section of ``medtune plan`` (steady state: the last of `steps`)."""
    from medtune.engine.zero import build_config
    from medtune.models.flops import PEAK_TFLOPS, FlopModel

    trace = trace or model_trace(cfg, recipe.model.gradient_checkpointing)
    weight_bytes = 4 if recipe.model.dtype == "fp32" else 2
    accum = recipe.train.grad_accum
    zero = build_config(recipe, links.world, cfg.hidden_size, weight_bytes == 2)["zero_optimization"]
    knobs = Knobs.from_ds(zero)
    h = links.gpus_per_node
    try:
        mine, _ = hierarchy_size(recipe.zero.hierarchy, links.world, h)
    except ValueError:
        mine = 1
    settings = [Setting("flat ZeRO-3", 1)]
    if links.nodes > 1 and h > 1:
        settings += [Setting(f"hpZ ({h})", h), Setting(f"hpZ ({h}) + qwZ + qgZ", h, True, True)]
    if mine not in (1, h):
        settings.insert(1, Setting(f"hpZ ({mine}), the recipe's", mine))
    rows, per_step = [], {}
    for s in settings:
        each = [traffic(c, s, trace, links, accum, weight_bytes, weight_bytes)
                for c in simulate(trace, knobs, links.world, s.hpz, accum, steps)]
        rows.append(each[-1])
        per_step[s.name] = [t.logged for t in each]
    tokens = accum * recipe.data.max_tokens
    recompute = 8 / 6 if recipe.model.gradient_checkpointing else 1.0  # the forward runs twice
    try:
        flops = FlopModel.from_model(cfg).linear_per_token * tokens * recompute
    except ValueError as err:  # what medtune cannot estimate, it says instead of guessing
        raise UserError(f"medtune plan: {err}") from None
    compute = flops / (PEAK_TFLOPS[GPU_PEAK[gpu]] * 1e12 * mfu)
    secondary = sum(trace.numel) * weight_bytes / h
    return CommPlan(rows, compute, tokens, links, gpu, mfu, secondary, weight_bytes, per_step)


def table(cp: CommPlan) -> str:
    """The printed communication section: a row per setting, the bottleneck, a recommendation."""
    lk = cp.links
    dtype = "fp32" if cp.weight_bytes == 4 else "bf16"
    lines = [f"communication per optimizer step and GPU ({dtype} weights and gradients; "
             f"{cp.tokens_per_gpu:,} tokens per GPU per step)",
             f"  links: inter-node {lk.inter_gbps:g} Gb/s per node ({lk.inter_gbps / 8:g} GB/s, "
             f"{lk.inter_gbps / lk.gpus_per_node:g} Gb/s per GPU), intra-node {lk.intra_gbps:g} Gb/s "
             f"per GPU ({lk.intra_gbps / 8:g} GB/s NVLink)",
             f"  compute: {cp.compute_seconds:.2f} s per step at {cp.mfu:.0%} of the {cp.gpu.upper()}'s "
             "dense bf16 peak",
             "",
             f"{'':<28}{'all-gather GB':>18}{'reduce-scatter GB':>20}{'comm s':>9}{'compute s':>11}",
             f"{'setting':<28}{'inter':>9}{'intra':>9}{'inter':>10}{'intra':>10}{'':>9}{'':>11}  bound",
             "-" * 95]
    for r in cp.rows:
        bound = "comm" if r.seconds > cp.compute_seconds else "compute"
        lines.append(f"{r.setting.name:<28}{r.gather_inter / GB:9.2f}{r.gather_intra / GB:9.2f}"
                     f"{r.reduce_inter / GB:10.2f}{r.reduce_intra / GB:10.2f}{r.seconds:9.2f}"
                     f"{cp.compute_seconds:11.2f}  {bound}")
    lines += ["", *recommend(cp)]
    return "\n".join(lines)


def recommend(cp: CommPlan) -> list[str]:
    """Which resource bounds the step under flat ZeRO-3, and the setting to use."""
    flat = cp.rows[0]
    step = lambda r: max(r.seconds, cp.compute_seconds)  # noqa: E731 (DeepSpeed overlaps the two)
    bound = "communication" if flat.seconds > cp.compute_seconds else "compute"
    if cp.links.nodes == 1 or cp.links.gpus_per_node == 1:
        where = "one node: every collective stays on NVLink" if cp.links.nodes == 1 else \
            "one GPU per node: no node to share weights within"
        return [f"{where}; the bottleneck is {bound}. Recommended: zero.hierarchy auto (= off here)."]
    hpz = next(r for r in cp.rows if r.setting.hpz > 1 and not r.setting.qwz)
    quant = next(r for r in cp.rows if r.setting.qwz)
    gain = step(flat) / step(hpz)
    best = ("zero.hierarchy auto (hpZ within each node)" if gain > 1.02 else
            "zero.hierarchy off (hpZ would only cost memory: the step is bound by compute)")
    if step(quant) < 0.9 * step(hpz):
        best += (", and consider zero.quantized_weights/zero.quantized_gradients: communication still "
                 "bounds the step")
    return [f"bottleneck with flat ZeRO-3: {bound} ({flat.seconds:.2f} s of communication vs "
            f"{cp.compute_seconds:.2f} s of compute).",
            f"hpZ: {hpz.seconds:.2f} s of communication, step about {gain:.2f}x faster than flat; "
            f"costs {cp.secondary_bytes / GB:.2f} GB per GPU for the secondary shards.",
            f"hpZ + qwZ + qgZ: {quant.seconds:.2f} s (int8 weights, int4 gradients in transit: lossy; "
            "GPU only).",
            f"recommended: {best}."]


def to_json(cp: CommPlan) -> dict[str, Any]:
    return {"compute_seconds": cp.compute_seconds, "tokens_per_gpu": cp.tokens_per_gpu,
            "links": asdict(cp.links), "gpu": cp.gpu, "mfu": cp.mfu,
            "secondary_bytes": cp.secondary_bytes, "logged_per_step": cp.per_step,
            "rows": [{**asdict(r), "setting": asdict(r.setting)} for r in cp.rows]}
