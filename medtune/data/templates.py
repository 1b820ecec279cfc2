"""Prompt templates: one record becomes a prompt text and a response text.

The paper's format (Rohanian et al. 2024)::

    ### Instruction: {instruction}
     ### Input: {input}
     ### Output: {output}</s>

The prompt ends at ``### Output:``; the response is `` {output}`` and the
tokenizer's EOS follows it. Loss falls on the response and EOS only. With
``chat``, the tokenizer's own chat template renders a user turn (instruction,
blank line, input) and an assistant turn (output).
"""
from __future__ import annotations

from dataclasses import dataclass

from medtune.data.formats.records import Record

PAPER_PROMPT = "### Instruction: {instruction}\n ### Input: {input}\n ### Output:"


@dataclass(frozen=True)
class Rendered:
    prompt: str
    """Everything the model sees before it answers."""
    response: str
    """The text the model is trained to produce."""
    add_special_tokens: bool
    """Let the tokenizer add its BOS (the paper format) or not (a chat
    template writes its own special tokens)."""
    append_eos: bool
    """Append the tokenizer's EOS after the response."""


def render(record: Record, template: str, tokenizer=None) -> Rendered:
    if template == "paper":
        prompt = PAPER_PROMPT.format(instruction=record.instruction, input=record.input)
        return Rendered(prompt, " " + record.output, True, True)
    if template == "chat":
        user = record.instruction if not record.input else f"{record.instruction}\n\n{record.input}"
        turns = [{"role": "user", "content": user}]
        prompt = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            turns + [{"role": "assistant", "content": record.output}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the tokenizer's chat template does not render the prompt as a prefix "
                             "of the full conversation; use data.template: paper")
        return Rendered(prompt, full[len(prompt):], False, False)
    raise ValueError(f"unknown template {template!r}")
