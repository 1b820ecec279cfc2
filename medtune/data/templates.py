"""Prompt templates and instruction pools: one record becomes a prompt and a response.

The paper's format (Rohanian et al. 2024)::

    ### Instruction: {instruction}
     ### Input: {input}
     ### Output: {output}</s>

The prompt ends at ``### Output:``; the response is `` {output}`` and the
tokenizer's EOS follows it. Loss falls on the response and EOS only. With
``chat``, the tokenizer's own chat template (or ``data.chat_template``) renders
a user turn (instruction, blank line, input) and an assistant turn (output),
or a record's whole conversation; every assistant turn is trained up to the
special token that ends it. How turns are found, and how a conversation reads
in the paper's format: `medtune.data.chat`.

Corpus records carry no instruction: each draws one from its source's pool
of paraphrases (`POOLS`), by a hash of (seed, source name, record index), so
the draw never depends on the order in which records are processed::

    >>> pick_instruction("nli", seed=0, source="mednli", index=17) == \\
    ...     pick_instruction("nli", seed=0, source="mednli", index=17)
    True
"""
from __future__ import annotations

import hashlib

from medtune.data.chat import PAPER_PROMPT, Rendered, render_chat, render_paper
from medtune.data.chat import end_of_turn, special_tokens  # noqa: F401 (importable from here, as before)
from medtune.data.formats.records import Record

_NER_FORMAT = ("Write one line per token in the form 'token : TAG', using B for the first token "
               "of {what}, I for each following token of it and O for every other token.")

# Paraphrased instructions per pool; a source names its pool with
# `instructions:` (default: the pool named like its task), or gives its own
# (`medtune.data.instructions`). ``{types}`` becomes the entity types the
# source's answers use (typed NER).
POOLS: dict[str, tuple[str, ...]] = {
    "ner": (
        "Identify the biomedical entity mentions in the sentence below. " + _NER_FORMAT.format(what="a mention"),
        "Tag every token of this biomedical sentence with B, I or O. " + _NER_FORMAT.format(what="an entity"),
        "Perform named entity recognition on the input text. " + _NER_FORMAT.format(what="an entity mention"),
        "Label the entities in the following sentence token by token. " + _NER_FORMAT.format(what="an entity"),
    ),
    "ner-disease": (
        "Find every disease mention in the sentence below. " + _NER_FORMAT.format(what="a disease name"),
        "Recognise the names of diseases and disorders in this text. " + _NER_FORMAT.format(what="a disease mention"),
        "Your task is disease named entity recognition. " + _NER_FORMAT.format(what="a disease"),
        "Mark the diseases mentioned in the following biomedical sentence. " + _NER_FORMAT.format(what="a disease name"),
        "Tag each token of the sentence for disease mentions. " + _NER_FORMAT.format(what="a disease mention"),
    ),
    "ner-chemical": (
        "Find every chemical or drug mentioned in the sentence below. " + _NER_FORMAT.format(what="a chemical name"),
        "Recognise the names of chemicals and drugs in this text. " + _NER_FORMAT.format(what="a chemical mention"),
        "Your task is chemical named entity recognition. " + _NER_FORMAT.format(what="a chemical"),
        "Mark the chemical compounds mentioned in the following biomedical sentence. "
        + _NER_FORMAT.format(what="a chemical name"),
    ),
    "ner-gene": (
        "Find every gene or protein mentioned in the sentence below. " + _NER_FORMAT.format(what="a gene or protein name"),
        "Recognise gene and gene product names in this text. " + _NER_FORMAT.format(what="a gene mention"),
        "Your task is gene mention recognition. " + _NER_FORMAT.format(what="a gene"),
        "Mark the genes and proteins in the following biomedical sentence. " + _NER_FORMAT.format(what="a gene name"),
    ),
    "ner-bioentity": (
        "Find every protein, DNA, RNA, cell line and cell type mentioned in the sentence below; "
        "treat them all as one entity class. " + _NER_FORMAT.format(what="an entity"),
        "Recognise molecular biology entities (proteins, DNA, RNA, cell lines, cell types) in this text "
        "without distinguishing their types. " + _NER_FORMAT.format(what="an entity"),
        "Your task is bio-entity recognition with a single entity class. " + _NER_FORMAT.format(what="an entity"),
        "Mark the proteins, nucleic acids and cells mentioned in the following sentence. "
        + _NER_FORMAT.format(what="a mention"),
    ),
    "ner-typed": (
        "Identify the named entities in the sentence below. Write one line per token in the form "
        "'token : TAG', where TAG is B-TYPE for the first token of an entity, I-TYPE for each following "
        "token (TYPE is one of {types}) and O for every other token.",
        "Tag each token of the text with its entity type in BIO format (B-TYPE, I-TYPE or O, with TYPE "
        "one of {types}). Output one 'token : TAG' line per token.",
        "Perform typed named entity recognition on this sentence; the entity types are {types}. Answer "
        "with one 'token : TAG' line per token, using B-TYPE, I-TYPE and O.",
        "Label every token of the following sentence as B-TYPE (entity start), I-TYPE (entity "
        "continuation) or O (outside), where TYPE is {types}. Write 'token : TAG' on its own line for "
        "each token.",
    ),
    "ner-clinical": (
        "Identify the clinical entities in this sentence from a patient record. Write one line per "
        "token in the form 'token : TAG', where TAG is B-TYPE for the first token of an entity, "
        "I-TYPE for each following token (TYPE is {types}) and O for every other token.",
        "Tag each token of the clinical text with its entity type in BIO format: B-TYPE, I-TYPE or O, "
        "with TYPE one of {types}. Output one 'token : TAG' line per token.",
        "Perform typed named entity recognition on this clinical note sentence; the entity types are "
        "{types}. Answer with one 'token : TAG' line per token, using B-TYPE, I-TYPE and O.",
        "Label every token of the following clinical sentence as B-TYPE (entity start), I-TYPE "
        "(entity continuation) or O (outside), where TYPE is {types}. Write 'token : TAG' on its own "
        "line for each token.",
    ),
    "ner-bioentity-typed": (
        "Find the molecular biology entities in the sentence below and give each its type ({types}). "
        "Write one line per token in the form 'token : TAG', where TAG is B-TYPE for the first token "
        "of an entity, I-TYPE for each following token and O for every other token.",
        "Recognise bio-entities in this text, keeping their types: {types}. Output one 'token : TAG' "
        "line per token, with TAG one of B-TYPE, I-TYPE or O.",
        "Your task is typed bio-entity recognition over the classes {types}. Tag every token with "
        "B-TYPE, I-TYPE or O and write 'token : TAG' on its own line for each token.",
        "Mark the proteins, nucleic acids and cells of the following sentence by type ({types}) in "
        "BIO format, one 'token : TAG' line per token.",
    ),
    "ner-species": (
        "Find every species mentioned in the sentence below (organisms such as human, mouse or "
        "Escherichia coli). " + _NER_FORMAT.format(what="a species name"),
        "Recognise the names of species and organisms in this text. " + _NER_FORMAT.format(what="a species mention"),
        "Your task is species named entity recognition. " + _NER_FORMAT.format(what="an organism name"),
        "Mark the organisms mentioned in the following biomedical sentence. "
        + _NER_FORMAT.format(what="a species name"),
    ),
    "re-i2b2": (
        "Classify the relation between the two clinical concepts marked @problem$, @test$ or "
        "@treatment$ in the sentence. Answer with one of PIP, TeCP, TeRP, TrAP, TrCP, TrIP, TrNAP, "
        "TrWP, or No Relations.",
        "What relation holds between the marked medical problem, test or treatment in this "
        "sentence? Reply PIP, TeCP, TeRP, TrAP, TrCP, TrIP, TrNAP, TrWP or No Relations.",
        "Determine how the two highlighted concepts in the clinical text are related. Give only the "
        "label: PIP, TeCP, TeRP, TrAP, TrCP, TrIP, TrNAP, TrWP, or No Relations if they are unrelated.",
        "Read the sentence from a discharge summary; its concepts are replaced by @problem$, @test$ "
        "and @treatment$. Output the relation type (PIP, TeCP, TeRP, TrAP, TrCP, TrIP, TrNAP, TrWP) "
        "or No Relations.",
    ),
    "re-gad": (
        "Does the sentence state an association between the gene @GENE$ and the disease @DISEASE$? "
        "Answer Positive or Negative.",
        "Decide whether the text reports a relation between @GENE$ and @DISEASE$. Reply with "
        "Positive if it does and Negative if it does not.",
        "Classify the gene-disease relation in the sentence below as Positive or Negative.",
        "Is the marked gene (@GENE$) associated with the marked disease (@DISEASE$) according to "
        "this sentence? Give Positive or Negative as your answer.",
    ),
    "nli": (
        "Determine the relation between the two clinical sentences. Answer Entailment if Sentence 2 "
        "follows from Sentence 1, Contradiction if it conflicts with it, or Neutral otherwise.",
        "Does Sentence 1 entail, contradict or say nothing about Sentence 2? Reply with Entailment, "
        "Contradiction or Neutral.",
        "Classify the inference between the premise (Sentence 1) and the hypothesis (Sentence 2) "
        "from a patient record as Entailment, Contradiction or Neutral.",
        "Read both sentences taken from clinical notes and decide their logical relation. Give only "
        "the label: Entailment, Contradiction or Neutral.",
    ),
    "hoc": (
        "Which hallmarks of cancer does this text discuss? Answer with the hallmark names separated "
        "by commas, or None if it discusses none.",
        "Classify the following biomedical text by the hallmarks of cancer it is about. List every "
        "hallmark that applies, comma-separated, or answer None.",
        "Assign hallmarks of cancer labels to this text (for example Sustaining proliferative "
        "signaling (PS), Inducing angiogenesis (A)). Write the labels separated by commas, or None.",
        "Read the text and name the cancer hallmarks it relates to, separated by commas; write None "
        "if no hallmark applies.",
    ),
    "pubmedqa": (
        "Answer the biomedical research question using the context. Reply with yes, no or maybe.",
        "Based on the abstract given as context, is the answer to the question yes, no or maybe?",
        "Read the context from a PubMed abstract and answer the question with one word: yes, no or maybe.",
        "Use the research findings in the context to answer the question. Your answer must be yes, "
        "no or maybe.",
    ),
}


def pick_instruction(pool: str, seed: int, source: str, index: int, copy: int = 0) -> str:
    """The instruction of record `index` of `source` (its `copy`-th repeat under a weight > 1)."""
    return draw(POOLS[pool], seed, source, index, copy)


def draw(choices: tuple[str, ...], seed: int, source: str, index: int, copy: int = 0) -> str:
    """One of `choices` by a hash of (seed, source, index, copy): the same record always draws the same."""
    key = f"{seed}\x1f{source}\x1f{index}\x1f{copy}".encode()
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return choices[h % len(choices)]


def render(record: Record, template: str, tokenizer=None, system_prompt: str | None = None) -> Rendered:
    """`record` as prompt and response text (a conversation: every turn; `medtune.data.chat`).

    Raises `ValueError` (one line) for an unknown template, ``chat`` on a
    tokenizer without a chat template, or a template that cannot render the record.
    """
    if template == "paper":
        return render_paper(record, tokenizer, system_prompt)
    if template == "chat":
        return render_chat(record, tokenizer, system_prompt)
    raise ValueError(f"unknown template {template!r}")


def plain_text(record: Record) -> str:
    """The record's text in the paper's format (a conversation: its turns, a line each), to train a tokenizer on."""
    if record.messages is None:
        return PAPER_PROMPT.format(instruction=record.instruction, input=record.input) + " " + record.output
    return "\n".join(content for _, content in record.messages)
