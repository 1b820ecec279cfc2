"""Loss over response tokens, summed (the trainer divides by the step's token count)."""
from __future__ import annotations

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
