"""Instruction data: sources -> records -> tokens with response-only labels -> packed rows.

Nothing here touches DeepSpeed; tokenizers come from transformers.
"""
