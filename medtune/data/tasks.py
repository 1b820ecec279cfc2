"""The paper's tasks: gold labels -> output text, and output text -> labels.

Each task has a formatter (what a reader writes as the record's ``output``)
and its inverse, the parser that evaluation applies to a model's generation.
For every record a reader yields, ``parse(task, output, input) == gold``.
The parsers are tolerant in the ways a generating model errs (case,
punctuation, stray lines) and count what they had to forgive.

NER (Rohanian et al. 2024): the input is the sentence's tokens joined by
spaces and the output one ``token : TAG`` line per token. Untyped sets use
``B``/``I``/``O``; i2b2-2012 keeps typed tags::

    >>> format_ner(["Patients", "with", "cystic", "fibrosis"], ["O", "O", "B", "I"])
    'Patients : O\\nwith : O\\ncystic : B\\nfibrosis : I'
    >>> parse_ner("Patients : O\\ncystic : B\\nfibrosis : I\\nextra : O",
    ...           ["Patients", "with", "cystic", "fibrosis"]).tags
    ('O', 'O', 'O', 'O')

Lines are aligned to the input tokens by position (never by searching for the
token text): line i is the tag of input token i only when its token equals
that token (whitespace normalised); a misaligned line gets no credit and
scores ``O``, so a dropped line costs every later tag. Missing, extra,
malformed and mismatched lines are counted; a token without a usable line is
scored ``O``.

Classification (RE, NLI, PubMedQA) answers one label; the parser maps
``" entailment."`` or ``"Yes, because ..."`` to the canonical label. HoC
answers comma-separated hallmark names or ``None``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

# --------------------------------------------------------------------------
# NER
# --------------------------------------------------------------------------

UNTYPED_TAGS = ("B", "I", "O")
_TYPED = re.compile(r"^([BI])-([A-Za-z][\w.]*)$")


def untyped(tag: str) -> str:
    """``B-Disease`` -> ``B``, ``I-protein`` -> ``I``, ``O`` -> ``O`` (JNLPBA's five types collapse)."""
    m = _TYPED.match(tag)
    return m.group(1) if m else tag


def typed(tag: str) -> str:
    """``B-problem`` -> ``B-PROBLEM``: typed tags are written with upper-case types."""
    m = _TYPED.match(tag)
    return f"{m.group(1)}-{m.group(2).upper()}" if m else tag


def valid_tag(tag: str, is_typed: bool) -> bool:
    """Whether `tag` is a tag of the scheme: ``B``/``I``/``O``, or ``B-TYPE``/``I-TYPE``/``O``."""
    if tag == "O":
        return True
    return bool(_TYPED.match(tag)) if is_typed else tag in ("B", "I")


def format_ner(tokens: Sequence[str], tags: Sequence[str]) -> str:
    """One ``token : TAG`` line per token."""
    assert len(tokens) == len(tags), "one tag per token"
    return "\n".join(f"{tok} : {tag}" for tok, tag in zip(tokens, tags))


@dataclass(frozen=True)
class NerParse:
    tags: tuple[str, ...]
    """One tag per input token; ``O`` where the output had no usable line."""
    missing: int = 0
    """Input tokens past the last output line."""
    extra: int = 0
    """Output lines past the last input token (ignored)."""
    malformed: int = 0
    """Lines that are not ``token : TAG`` or carry a tag outside the scheme (scored ``O``)."""
    mismatched: int = 0
    """Lines whose token differs from the input token at that position (scored ``O``)."""


def parse_ner(text: str, tokens: Sequence[str], is_typed: bool = False) -> NerParse:
    """Tags for `tokens` from a generated ``token : TAG`` answer.

    The position-aligned rule (medtune's headline NER score): blank lines are
    skipped; the i-th remaining line scores for input token i only when its
    token equals ``tokens[i]`` after whitespace normalisation (``" ".join(x.split())``),
    otherwise it is *mismatched* and scores ``O`` (no credit for a misaligned
    line). Tags are read case-insensitively; in the untyped scheme a typed tag
    (``B-Disease``) counts as its bare letter, in the typed scheme a bare
    ``B``/``I`` is malformed. Worked example, tokens ``[a, b, c]``::

        "a : B\\nb - I\\nc : X\\nd : O"  ->  tags (B, O, O), malformed 2
                                            (no " : " in line 2, unknown tag X), extra 1
        "a : B\\nc : I\\nb : B"         ->  tags (B, O, O), mismatched 2
    """
    # "\n" only: U+2028/U+0085 inside a token (text pasted from PDFs) is not a line break
    lines = [ln.strip() for ln in text.strip().split("\n") if ln.strip()]
    tags: list[str] = []
    malformed = mismatched = 0
    for i, line in enumerate(lines[:len(tokens)]):
        tok, sep, tag = line.rpartition(" : ")
        if not sep:  # tolerate "tok:TAG" and "tok : " spacing slips
            tok, sep, tag = line.rpartition(":")
        tag = _normal_tag(tag.strip(), is_typed) if sep else None
        if tag is None:
            malformed += 1
            tags.append("O")
            continue
        if _ws(tok) != _ws(tokens[i]):
            mismatched += 1
            tags.append("O")
            continue
        tags.append(tag)
    missing = max(0, len(tokens) - len(lines))
    tags += ["O"] * missing
    return NerParse(tuple(tags), missing, max(0, len(lines) - len(tokens)), malformed, mismatched)


def _ws(token: str) -> str:
    """Whitespace-normalised token: runs of whitespace become one space, ends stripped."""
    return " ".join(token.split())


def _normal_tag(tag: str, is_typed: bool) -> str | None:
    tag = tag.rstrip(".,;")
    if tag.upper() == "O":
        return "O"
    if is_typed:
        m = _TYPED.match(tag[:1].upper() + tag[1:])
        return f"{m.group(1)}-{m.group(2).upper()}" if m else None
    if tag.upper() in ("B", "I"):
        return tag.upper()
    m = _TYPED.match(tag[:1].upper() + tag[1:])
    return m.group(1) if m else None


def mentions(tags: Iterable[str]) -> int:
    """Number of mentions: tags that begin one (``B`` or ``B-TYPE``)."""
    return sum(1 for t in tags if t[:1] == "B")


# --------------------------------------------------------------------------
# Single-label classification: RE, NLI, PubMedQA
# --------------------------------------------------------------------------

I2B2_2010_LABELS = ("PIP", "TeCP", "TeRP", "TrAP", "TrCP", "TrIP", "TrNAP", "TrWP", "No Relations")
GAD_LABELS = ("Positive", "Negative")
NLI_LABELS = ("Entailment", "Contradiction", "Neutral")
PUBMEDQA_LABELS = ("yes", "no", "maybe")

# Spellings a corpus file or a model may use for a canonical label.
LABEL_ALIASES: dict[str, str] = {
    "false": "No Relations", "no relation": "No Relations", "none": "No Relations",
    "no_relation": "No Relations",
}


def _norm(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: ``" No-Relations."`` -> ``"no relations"``."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def canonical_label(text: str, labels: Sequence[str]) -> str | None:
    """`text` as one of `labels` when it is exactly one (tolerating case, punctuation, aliases)."""
    n = _norm(text)
    for lab in labels:
        if n == _norm(lab):
            return lab
    alias = LABEL_ALIASES.get(n) or LABEL_ALIASES.get(n.replace(" ", "_"))
    return alias if alias in labels else None


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a generated answer gives, or ``None`` when it names none.

    Exact (normalised) matches win; otherwise the answer's first words are
    tried, longest label first, so ``"Yes, the trial shows..."`` gives
    ``yes`` and ``"TrNAP"`` is never read as ``TrAP``::

        >>> parse_label(" Contradiction.", NLI_LABELS)
        'Contradiction'
        >>> parse_label("No relations", I2B2_2010_LABELS)
        'No Relations'
    """
    exact = canonical_label(text, labels)
    if exact is not None:
        return exact
    words = _norm(text).split()
    candidates = sorted(labels, key=lambda lab: -len(_norm(lab).split()))
    for lab in candidates:
        n = _norm(lab).split()
        if words[:len(n)] == n:
            return lab
    for alias, lab in LABEL_ALIASES.items():
        n = alias.replace("_", " ").split()
        if lab in labels and words[:len(n)] == n:
            return lab
    return None


# --------------------------------------------------------------------------
# Hallmarks of Cancer: multi-label document classification
# --------------------------------------------------------------------------

# In the alphabetical order of their names, which is the order of BLUE's
# ``0_1,1_0,...`` label encoding (index i = i-th name here).
HOC_LABELS = (
    "Activating invasion and metastasis (IM)",
    "Avoiding immune destruction (ID)",
    "Cellular energetics (CE)",
    "Enabling replicative immortality (RI)",
    "Evading growth suppressors (GS)",
    "Genomic instability and mutation (GI)",
    "Inducing angiogenesis (A)",
    "Resisting cell death (CD)",
    "Sustaining proliferative signaling (PS)",
    "Tumor promoting inflammation (TPI)",
)
HOC_NONE = "None"


def _hoc_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    for lab in HOC_LABELS:
        name, abbr = lab[:-1].split(" (")
        keys[_norm(lab)] = keys[_norm(name)] = keys[_norm(abbr)] = lab
    keys["deregulating cellular energetics"] = "Cellular energetics (CE)"
    keys["sustaining proliferative signalling"] = "Sustaining proliferative signaling (PS)"
    keys["tumour promoting inflammation"] = "Tumor promoting inflammation (TPI)"
    return keys


_HOC_KEYS = _hoc_keys()


def hoc_label(name: str) -> str | None:
    """The canonical hallmark for a full name, a name without its abbreviation, or the abbreviation."""
    return _HOC_KEYS.get(_norm(name))


def format_hoc(labels: Iterable[str]) -> str:
    """Hallmark names in canonical order, comma-separated, or ``None``::

        >>> format_hoc(["Sustaining proliferative signaling (PS)", "Inducing angiogenesis (A)"])
        'Inducing angiogenesis (A), Sustaining proliferative signaling (PS)'
    """
    chosen = set(labels)
    assert chosen <= set(HOC_LABELS), f"unknown hallmark(s) {chosen - set(HOC_LABELS)}"
    return ", ".join(lab for lab in HOC_LABELS if lab in chosen) or HOC_NONE


@dataclass(frozen=True)
class HocParse:
    labels: tuple[str, ...]
    """Recognised hallmarks, canonical order."""
    unknown: int = 0
    """Comma-separated parts that name no hallmark (ignored)."""


def parse_hoc(text: str) -> HocParse:
    """Hallmarks named in a generated answer (``None`` or nothing recognised: empty).

    Parts are split on commas, semicolons and new lines; each may be the full
    label, the name alone or the abbreviation, in any case.
    """
    found: set[str] = set()
    unknown = 0
    for part in re.split(r"[,;\n]", text):
        if not _norm(part) or _norm(part) in ("none", "no hallmarks"):
            continue
        lab = hoc_label(part)
        if lab is None:
            unknown += 1
        else:
            found.add(lab)
    return HocParse(tuple(lab for lab in HOC_LABELS if lab in found), unknown)


# --------------------------------------------------------------------------
# The registry: task name -> labels and parser, for readers and evaluation.
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    """``ner``, ``label`` (one of `labels`), ``multilabel`` (HoC) or ``text`` (free text)."""
    labels: tuple[str, ...] = ()
    typed: bool = False


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("ner", "ner"),
    Task("ner-typed", "ner", typed=True),
    Task("re-i2b2", "label", I2B2_2010_LABELS),
    Task("re-gad", "label", GAD_LABELS),
    Task("nli", "label", NLI_LABELS),
    Task("pubmedqa", "label", PUBMEDQA_LABELS),
    Task("hoc", "multilabel", HOC_LABELS),
)}


def parse(task: str, output: str, input: str = "") -> tuple | str | None:
    """Gold-comparable labels of an answer: NER tags (a tuple), a label, or a HoC label tuple.

    ``parse(r.task, r.output, r.input) == r.gold`` for every record a reader yields.
    """
    t = TASKS[task]
    if t.kind == "ner":
        return parse_ner(output, input.split(" "), t.typed).tags
    if t.kind == "label":
        return parse_label(output, t.labels)
    if t.kind == "multilabel":
        return parse_hoc(output).labels
    raise ValueError(f"task {task!r} has no parser")
