"""A packed row's logits equal each sample's logits run alone, for every backend medtune allows."""
from __future__ import annotations

import pytest
import torch

from medtune.config import ModelConfig
from medtune.data.collator import collate
from medtune.engine.trainer import forward
from tests.integration.helpers import TINY_LLAMA

BACKENDS = ModelConfig.__pydantic_fields__["attention"].annotation.__args__


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_logits_equal_unpacked(backend):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(TINY_LLAMA)
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg),
                                           attn_implementation=backend).eval()
    gen = torch.Generator().manual_seed(1)
    samples = [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in (17, 1, 40, 9)]
    batch = collate([(s, s) for s in samples], pad_id=0)
    with torch.no_grad():
        packed = forward(net, batch, "cpu")[0]
        start = 0
        for s in samples:
            alone = net(input_ids=torch.tensor([s])).logits[0]
            torch.testing.assert_close(packed[start:start + len(s)], alone, rtol=1e-5, atol=1e-5)
            start += len(s)
