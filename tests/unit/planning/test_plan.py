"""`medtune plan`'s activation estimate follows the recipe's loss head."""
from __future__ import annotations

from medtune.planning import memory
from medtune.kernels.loss import auto_chunk_tokens

LLAMA3_8B = memory.Shape(params=8_030_000_000, largest_layer=525_336_576, hidden=4096, intermediate=14336,
                       layers=32, vocab=128256)


def test_chunked_head_replaces_the_logits_by_the_weight_gradient_and_one_chunk():
    t = 4096
    standard = memory.activations(LLAMA3_8B, t, checkpointing=True)
    chunked = memory.activations(LLAMA3_8B, t, checkpointing=True, loss="chunked")
    chunk = auto_chunk_tokens(t, 4096, 128256)
    assert standard - chunked == 10 * t * 128256 - (4 * 128256 * 4096 + 2 * t * 4096 + 6 * chunk * 128256)
    assert chunked < 0.6 * standard  # with checkpointing the 5 GiB of logits dominated


def test_table_names_the_loss_head():
    from medtune import config
    from tests.conftest import RECIPES

    recipe = config.load(RECIPES / "llama3.1-8b-medtuned.yaml", check_files=False)
    assert recipe.kernels.loss == "chunked"
    text = memory.table(recipe, LLAMA3_8B, 2, 8, 80.0)
    assert "chunked loss head" in text
