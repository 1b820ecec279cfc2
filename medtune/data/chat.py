"""Conversations rendered for training: every assistant turn trained, nothing else.

A record is a conversation of ``(role, content)`` turns: its own
``messages`` (``messages``/``sharegpt`` sources), or one user turn
(instruction, blank line, input) and one assistant turn (output). With
``data.system_prompt`` a system turn is put first when there is none. Turns
after the last assistant turn are dropped (nothing to learn from them).

Chat templates (``data.template: chat``). The assistant spans are found by
rendering prefixes of the conversation with ``apply_chat_template``, the way
TRL's ``DataCollatorForCompletionOnlyLM`` successors and torchtune's
``tokenize_messages`` reason about turns: for the assistant turn at index
``j``, ``P = render(turns[:j], add_generation_prompt=True)`` is everything
before it and ``F = render(turns[:j+1])`` everything up to its end, so the
turn is ``F[len(P):]``, cut just after the special token that ends it
(`end_of_turn`: ``<|im_end|>``, ``<|eot_id|>``,
``</s>``). That token is trained with the turn and is what generation stops
on (`medtune.data.tokenize.stop_token_ids`). Every ``P`` and turn must be a
prefix of the whole rendered conversation; a template that rewrites earlier
turns (e.g. drops past reasoning) is refused with a one-line error. This
works for any template; transformers' ``return_assistant_tokens_mask`` needs
``{% generation %}`` markers that few templates have.

Paper template, several turns: each exchange is ``### Instruction: {user}\\n
### Input: \\n ### Output: {assistant}`` followed by EOS (one BOS at the start;
a system turn is a first line of its own), so a one-turn conversation is the
paper's format exactly.
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
    history: tuple[tuple[str, str], ...] = ()
    """Earlier ``(prompt, response)`` turns of a conversation, before `prompt`;
    each response is trained too. The text is every prompt and response in order."""

    @property
    def text(self) -> str:
        return "".join(p + r for p, r in self.history) + self.prompt + self.response

    def spans(self) -> list[tuple[int, int]]:
        """The trained ``[start, stop)`` character ranges of `text`: every response."""
        out, at = [], 0
        for p, r in (*self.history, (self.prompt, self.response)):
            at += len(p)
            out.append((at, at + len(r)))
            at += len(r)
        return out


def special_tokens(tokenizer) -> list[str]:
    """Every special token's text: the named ones and added tokens marked special."""
    named = list(tokenizer.all_special_tokens)
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
    return list(dict.fromkeys(named + added))


def end_of_turn(response: str, content: str, tokenizer) -> tuple[str, bool]:
    """An assistant turn cut just after the special token that ends it.

    `response` is what a chat template writes for the assistant turn after
    the generation prompt (``"yes<|im_end|>\\n"`` in ChatML), `content` the
    assistant message. The first special token after the content ends the
    turn: it is what the model must learn to emit and what generation stops
    on (`medtune.data.tokenize.stop_token_ids`). Text the template writes
    after it (ChatML's newline) is dropped: the model never generates it,
    so it is not trained. Returns ``(response, True)`` cut after that token,
    or ``(response, False)`` when the turn ends in no special token (the
    caller then appends the tokenizer's EOS). With ChatML,
    ``end_of_turn("yes<|im_end|>\\n", "yes", tok) == ("yes<|im_end|>", True)``.
    """
    start = 0
    for text in (content, content.strip()):
        at = response.find(text) if text else -1
        if at >= 0:
            start = at + len(text)
            break
    best = None
    for tok in special_tokens(tokenizer):
        at = response.find(tok, start)
        if at >= 0 and (best is None or (at, -len(tok)) < (best[0], -len(best[1]))):
            best = (at, tok)
    if best is None:
        return response, False
    return response[:best[0] + len(best[1])], True


def turns(record: Record, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The conversation of `record` as ``[{"role", "content"}]``, ending with its last assistant turn.

    ``turns(Record("Tag it.", "A b", "A : O"))`` is a user turn ``"Tag it.\\n\\nA b"``
    and an assistant turn ``"A : O"``.
    """
    if record.messages is None:
        user = record.instruction if not record.input else f"{record.instruction}\n\n{record.input}"
        out = [{"role": "user", "content": user}, {"role": "assistant", "content": record.output}]
    else:
        out = [{"role": r, "content": c} for r, c in record.messages]
        last = max(i for i, m in enumerate(out) if m["role"] == "assistant")
        out = out[:last + 1]
    if system_prompt is not None and out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def render_chat(record: Record, tokenizer, system_prompt: str | None = None):
    """`record` through the tokenizer's chat template: a `medtune.data.templates.Rendered`
    whose ``history`` holds the earlier ``(prompt, assistant turn)`` pairs.

    Raises `ValueError` (one line) when the tokenizer has no chat template, the
    template fails on the conversation, or it does not render turns as prefixes.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template: give one with data.chat_template: "
                         "path/to/template.jinja, or use data.template: paper")
    msgs = turns(record, system_prompt)
    full = _apply(tokenizer, msgs, False)
    pieces: list[tuple[str, str, bool]] = []
    at = 0
    for j, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prompt = _apply(tokenizer, msgs[:j], True)
        upto = full if j + 1 == len(msgs) else _apply(tokenizer, msgs[:j + 1], False)
        if not (upto.startswith(prompt) and full.startswith(prompt)) or len(prompt) < at:
            raise ValueError(f"the chat template does not render turn {j + 1} as a continuation of the "
                             "turns before it; use a template that does, or data.template: paper")
        response, terminated = end_of_turn(upto[len(prompt):], m["content"], tokenizer)
        if not full.startswith(response, len(prompt)):
            raise ValueError(f"the chat template renders assistant turn {j + 1} differently once later "
                             "turns follow it; use a template that does not, or data.template: paper")
        pieces.append((full[at:len(prompt)], response, terminated))
        at = len(prompt) + len(response)
    *history, (prompt, response, terminated) = pieces
    return Rendered(prompt, response, False, not terminated,
                    history=tuple((p, r) for p, r, _ in history))


def render_paper(record: Record, tokenizer=None, system_prompt: str | None = None):
    """`record` in the paper's format; a conversation as one exchange per assistant turn (see above).

    Raises `ValueError` for a conversation of several turns without a
    tokenizer (its EOS text ends every earlier turn).
    """
    if record.messages is None:  # the paper's own record: its input stays in "### Input:"
        head = "" if system_prompt is None else system_prompt + "\n"
        prompt = PAPER_PROMPT.format(instruction=record.instruction, input=record.input)
        return Rendered(head + prompt, " " + record.output, True, True)
    msgs = turns(record, system_prompt)
    head = msgs[0]["content"] + "\n" if msgs[0]["role"] == "system" else ""
    pieces: list[tuple[str, str]] = []
    users: list[str] = []
    for m in msgs:
        if m["role"] == "user":
            users.append(m["content"])
        elif m["role"] == "assistant":
            pieces.append((PAPER_PROMPT.format(instruction="\n".join(users), input=""), " " + m["content"]))
            users = []
    if len(pieces) > 1 and (tokenizer is None or tokenizer.eos_token is None):
        raise ValueError("the paper template needs the tokenizer's EOS to end each turn of a conversation")
    history = tuple((p, r + tokenizer.eos_token) for p, r in pieces[:-1])
    if history:
        history = ((head + history[0][0], history[0][1]),) + history[1:]
        return Rendered(pieces[-1][0], pieces[-1][1], True, True, history=history)
    return Rendered(head + pieces[-1][0], pieces[-1][1], True, True)


def _apply(tokenizer, msgs: list[dict], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=generation_prompt, tokenize=False)
    except Exception as err:  # jinja's TemplateError, raise_exception(...) in the template
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"the chat template cannot render this conversation: {first}") from None
