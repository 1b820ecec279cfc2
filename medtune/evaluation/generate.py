"""Generation for evaluation: the training prompt in, the model's answer out.

The prompt is rendered by `medtune.data.templates.render` and tokenized as
`medtune.data.tokenize.encode_batch` tokenizes it (the same
``add_special_tokens``), so its ids are exactly the prompt ids the model was
trained on (``encode(...).input_ids[:prompt_tokens]``). Prompts are batched
with left padding and decoded greedily (or with beams) until a stop token or
``max_new_tokens``: the tokenizer's EOS and every id the export's generation
config lists (the template's turn terminator, ChatML's ``<|im_end|>``); the
answer is cut at the first stop token.

With ``RANK``/``WORLD_SIZE`` set (``torchrun --nproc_per_node N -m medtune.cli eval ...``,
or any launcher `medtune.base.ranks.discover` knows), rank r generates
samples r, r+N, r+2N, ... and rank 0 gathers all answers
(``torch.distributed.gather_object``) and scores them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from medtune.data import templates
from medtune.data.formats.records import Record
from medtune.base.errors import UserError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0


def ranks() -> Ranks:
    """This process's place among the evaluating ranks (one rank when no launcher says otherwise)."""
    if not any(v in os.environ for v in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_STEP_ID",
                                         "MV2_COMM_WORLD_RANK")):
        return Ranks()
    from medtune.base.ranks import discover

    env = discover()
    return Ranks(env.rank, env.world, env.local_rank)


def shard(n: int, rank: int, world: int) -> list[int]:
    """The sample indices rank `rank` of `world` generates for (round robin, so lengths balance)."""
    return list(range(rank, n, world))


def load(model_dir: str | Path, device: str | None = None):
    """``(model, tokenizer, device)`` from a medtune export or any causal-LM directory / hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if path.exists() and not (path / "config.json").is_file():
        raise UserError(f"--model {model_dir}: no config.json there; give a Hugging Face model "
                        "directory (e.g. RUN_DIR/export from `medtune train` or `medtune export`)")
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto")
    model.to(device).eval()
    return model, tok, device


def prompt_ids(record: Record, template: str, tokenizer) -> list[int]:
    """The prompt's token ids, exactly as training tokenized them."""
    r = templates.render(record, template, tokenizer)
    return tokenizer(r.prompt, add_special_tokens=r.add_special_tokens)["input_ids"]


def stop_ids(model, tokenizer, extra: Sequence[int] = ()) -> list[int]:
    """The ids generation stops on: the tokenizer's EOS, the model's generation-config
    ``eos_token_id`` (one id or a list; a medtune export lists the template's turn
    terminator there) and `extra` (e.g. `medtune.data.tokenize.stop_token_ids`)."""
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    gen_eos = gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]
    return list(dict.fromkeys(i for i in (tokenizer.eos_token_id, *gen_eos, *extra) if i is not None))


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string (whole text when none occurs).

    ``cut_at_stop("yes<|im_end|>\\nyes", ["</s>", "<|im_end|>"]) == "yes"``.
    """
    at = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:at]


def answer_text(ids: Sequence[int], tokenizer, stops: Sequence[int]) -> str:
    """The answer in generated ids: cut before the first stop id, decoded, cut at the first stop string.

    Everything after the first stop token is not the answer (a batch row that
    went on, or a model that was never told to stop there): ids
    ``yes <|im_end|> \\n yes`` give ``"yes"``. The text is cut again at any
    stop token's string, which a tokenizer may also produce from plain pieces.
    """
    ids, stop_set = list(ids), set(stops)
    first = next((k for k, i in enumerate(ids) if i in stop_set), len(ids))
    text = tokenizer.decode(ids[:first], skip_special_tokens=True)
    return cut_at_stop(text, [t for t in tokenizer.convert_ids_to_tokens(list(stops)) if t]).strip()


def generate(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int = 512,
             num_beams: int = 1, batch_size: int = 8, device: str = "cpu",
             progress: Callable[[int], None] | None = None,
             stop: Sequence[int] | None = None, **generate_kwargs) -> list[str]:
    """Answers for token-id prompts: batched (longest first), left-padded, greedy unless beams > 1.

    Generation stops on every id of `stop` (default: `stop_ids` of the model
    and tokenizer) and each answer is cut at the first of them (`answer_text`).
    `generate_kwargs` go to ``model.generate`` as they are (``synced_gpus=True``
    under ZeRO-3, `medtune.evaluation.during`).
    """
    import torch

    eos = list(stop) if stop else stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            p = prompts[i]
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                 eos_token_id=eos, pad_token_id=pad, **generate_kwargs)
        for row, i in enumerate(batch):
            answers[i] = answer_text(out[row, width:].tolist(), tokenizer, eos)
        if progress:
            progress(len(batch))
    return answers


def gather(local: dict[int, str], world: int) -> dict[int, str] | None:
    """All ranks' answers on rank 0 (``None`` elsewhere); the identity on one rank."""
    if world == 1:
        return local
    import torch.distributed as dist

    gathered = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if dist.get_rank() != 0:
        return None
    merged: dict[int, str] = {}
    for part in gathered:
        merged.update(part)
    return merged


def init_distributed(r: Ranks) -> None:
    if r.world == 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(r.rank), str(r.world)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def finish_distributed(r: Ranks) -> None:
    if r.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
