"""Scores: generated answers, parsed by the inverse of the data formatters, against gold.

Parsing is `medtune.data.tasks` (the formatters' inverses); this module
counts what the parsers had to forgive and computes each task's metrics.

| task        | metrics                                                        |
|-------------|----------------------------------------------------------------|
| ner         | entity-level P/R/F1, seqeval strict IOB2 and lenient (B/I -> B-ENT/I-ENT) |
| ner-typed   | entity-level P/R/F1, the same two modes on the typed tags      |
| re-i2b2/gad | accuracy; micro-F1 over the relation classes (not the negative)|
| nli         | accuracy                                                       |
| pubmedqa    | accuracy; macro-F1 over yes/no/maybe                           |
| hoc         | micro-F1 over (document, hallmark) pairs                       |

Every set also reports its parse failures: an NER answer with any missing,
extra, malformed or mismatched line, a label answer that names no label, a HoC
answer with a part that names no hallmark. A failure never stops scoring: the
unreadable part counts as ``O`` (NER), as no label (always wrong) or is
ignored (HoC).

NER is scored two ways:

* position-aligned (medtune's headline): line i of the answer is the tag of
  input token i when its token matches (`medtune.data.tasks.parse_ner` holds
  the rule), in seqeval's strict IOB2 mode and its lenient default mode;
* seed-compatible (`ner_seed_compat`): the seed's token-keyed score, where each
  sentence's gold and generated tags are dicts keyed by the token string, so a
  repeated token ("the", ",") keeps one tag and the sentence shrinks
  (NCBI-disease devel: 23,969 tokens become 20,929), scored in lenient mode.
  The paper's figures were computed this way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from medtune.data import tasks

NEGATIVE = {"re-i2b2": "No Relations", "re-gad": "Negative"}
"""The class left out of RE micro-F1 (no relation)."""


@dataclass
class Parsed:
    """One answer, parsed, with what the parser had to forgive."""
    pred: tuple | str | None
    failed: bool
    missing: int = 0
    extra: int = 0
    malformed: int = 0
    mismatched: int = 0
    unknown: int = 0


def parse_answer(task: str, text: str, input: str = "") -> Parsed:
    """Parse a generated answer for `task`; never raises on any text."""
    t = tasks.TASKS[task]
    if t.kind == "ner":
        p = tasks.parse_ner(text, input.split(" "), t.typed)
        return Parsed(p.tags, bool(p.missing or p.extra or p.malformed), p.missing, p.extra,
                      p.malformed, p.mismatched)
    if t.kind == "label":
        label = tasks.parse_label(text, t.labels)
        return Parsed(label, label is None)
    if t.kind == "multilabel":
        h = tasks.parse_hoc(text)
        return Parsed(h.labels, h.unknown > 0, unknown=h.unknown)
    raise ValueError(f"task {task!r} has no parser")


# --------------------------------------------------------------------------
# NER
# --------------------------------------------------------------------------

def to_iob2(tags: Sequence[str], typed: bool) -> list[str]:
    """seqeval tags: typed tags as they are; the paper's bare ``B``/``I`` become ``B-ENT``/``I-ENT``."""
    if typed:
        return list(tags)
    return [t if t == "O" else f"{t}-ENT" for t in tags]


MODES = ("strict", "lenient")
"""seqeval's two ways of reading entities: ``strict`` IOB2 (an entity starts only at ``B``) and
``lenient``, seqeval's default mode (conlleval's rules: an ``I`` after ``O`` or after another type
starts an entity), the mode the seed scored with."""


def ner_prf(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], typed: bool,
            mode: str = "strict") -> dict:
    """Entity-level precision, recall and F1 of tag sequences, and the counts behind them.

    `gold` and `pred`: one tag sequence per sentence, equal lengths (bare ``B``/``I``/``O``, or
    ``B-TYPE``/``I-TYPE``/``O`` when `typed`). `mode`: ``strict`` (seqeval ``mode="strict",
    scheme=IOB2``) or ``lenient`` (seqeval's default mode, conlleval-like). Scores are fractions
    in [0, 1] (0 when there is nothing to count). Raises ValueError on an unknown mode.
    """
    from seqeval.metrics import sequence_labeling, v1
    from seqeval.scheme import IOB2, Entities

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    g = [to_iob2(s, typed) for s in gold]
    p = [to_iob2(s, typed) for s in pred]
    assert all(len(a) == len(b) for a, b in zip(g, p)) and len(g) == len(p), "one tag per token"
    # what seqeval's precision_score/recall_score/f1_score compute, in one pass
    if mode == "strict":
        prec, rec, f1, _ = v1.precision_recall_fscore_support(g, p, average="micro", zero_division=0,
                                                              scheme=IOB2)
        count = lambda seqs: sum(len(e) for e in Entities(seqs, IOB2).entities)  # noqa: E731
    else:
        prec, rec, f1, _ = sequence_labeling.precision_recall_fscore_support(g, p, average="micro",
                                                                             zero_division=0)
        count = lambda seqs: len(sequence_labeling.get_entities(seqs))  # noqa: E731
    return {
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
        "tokens": sum(len(s) for s in g),
        "gold_entities": count(g),
        "pred_entities": count(p),
    }


def ner_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], typed: bool) -> dict:
    """medtune's position-aligned NER score in both seqeval modes.

    Keys: ``precision``/``recall``/``f1`` (strict IOB2, the headline), ``tokens``,
    ``gold_entities``/``pred_entities`` (strict), and ``lenient``: the same keys in
    seqeval's default (conlleval-like) mode. `pred` comes from `medtune.data.tasks.parse_ner`,
    where the alignment rule lives (line i scores for input token i only when its token matches).
    """
    strict = ner_prf(gold, pred, typed, "strict")
    lenient = ner_prf(gold, pred, typed, "lenient")
    return {**strict, "lenient": {k: lenient[k] for k in ("precision", "recall", "f1",
                                                         "gold_entities", "pred_entities")}}


def token_keyed(tokens: Sequence[str], tags: Sequence[str]) -> tuple[list[str], list[str]]:
    """The seed's view of one sentence: a dict token -> tag (a repeated token keeps its last tag)."""
    d: dict[str, str] = {}
    for tok, tag in zip(tokens, tags):
        d[tok] = tag
    return list(d), list(d.values())


def seed_lines(text: str) -> dict[str, str]:
    """The seed's reading of a ``token : tag`` answer: a dict token -> tag.

    Every line that contains ``" : "`` is split at its last ``" : "``; token and tag are
    stripped; a repeated token keeps its last tag (dict assignment). A line without ``" : "``
    (chatter, ``tok - B``, ``tok:B``, a truncated line) is skipped. Tags are kept as written
    (no case folding, no ``B-Disease`` -> ``B``): `ner_seed_compat` maps what is not a tag
    of the scheme to ``O``.
    """
    d: dict[str, str] = {}
    for line in text.splitlines():
        tok, sep, tag = line.strip().rpartition(" : ")
        if sep:
            d[tok.strip()] = tag.strip()
    return d


def seed_tags(gold_answer: str, answer: str, typed: bool = False) -> tuple[list[str], list[str]]:
    """One sentence as the seed scored it: (gold tags, predicted tags), one per distinct gold token.

    The seed's rules (Rohanian et al. 2024's evaluation script, as medtune's issue 19 states
    them): both answers are read by `seed_lines` (dicts keyed by token string, so repeated
    tokens collapse, last tag wins); for every gold token, in the gold's first-seen order, the
    generated tag is looked up (a token the answer lacks -> ``O``) and a generated tag that is
    not ``B``/``I``/``O`` becomes ``O``. Typed sets (`typed`): ``B-TYPE``/``I-TYPE``/``O``
    are the scheme's tags instead (the untyped rule would turn every typed tag into ``O``;
    this generalisation is medtune's, the seed's script is not available to check it).
    """
    from medtune.data import tasks as _tasks

    gold = seed_lines(gold_answer)
    pred = seed_lines(answer)
    looked = (pred.get(tok, "O") for tok in gold)
    return list(gold.values()), [t if _tasks.valid_tag(t, typed) else "O" for t in looked]


def ner_seed_compat(gold_answers: Sequence[str], answers: Sequence[str], typed: bool) -> dict:
    """The seed's NER score: `seed_tags` per sentence, then seqeval's default (lenient) mode.

    `gold_answers`: each sample's gold ``token : TAG`` text (the record's ``output``);
    `answers`: the generated texts, same order. Returns `ner_prf`'s keys (``tokens``: the
    distinct gold tokens scored). This is how the paper's NER figures were computed.
    """
    pairs = [seed_tags(g, a, typed) for g, a in zip(gold_answers, answers)]
    return ner_prf([g for g, _ in pairs], [p for _, p in pairs], typed, "lenient")


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------

def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def label_scores(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str],
                 negative: str | None = None) -> dict:
    """Accuracy, micro-F1 over `labels` except `negative`, and macro-F1 over all `labels`.

    An unparsed answer (``None``) is wrong: a false negative of its gold
    class and a false positive of none.
    """
    n = len(gold)
    acc = sum(g == p for g, p in zip(gold, pred)) / n if n else 0.0
    per = {}
    tp_all = fp_all = fn_all = 0
    for lab in labels:
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred))
        fp = sum(g != lab and p == lab for g, p in zip(gold, pred))
        fn = sum(g == lab and p != lab for g, p in zip(gold, pred))
        per[lab] = prf(tp, fp, fn)[2]
        if lab != negative:
            tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    p, r, f = prf(tp_all, fp_all, fn_all)
    return {"accuracy": acc, "micro_precision": p, "micro_recall": r, "micro_f1": f,
            "macro_f1": sum(per.values()) / len(per) if per else 0.0, "per_label_f1": per}


def multilabel_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Micro P/R/F1 over (document, label) pairs, and exact-match accuracy."""
    tp = sum(len(set(g) & set(p)) for g, p in zip(gold, pred))
    fp = sum(len(set(p) - set(g)) for g, p in zip(gold, pred))
    fn = sum(len(set(g) - set(p)) for g, p in zip(gold, pred))
    p, r, f = prf(tp, fp, fn)
    exact = sum(set(g) == set(p) for g, p in zip(gold, pred)) / len(gold) if gold else 0.0
    return {"micro_precision": p, "micro_recall": r, "micro_f1": f, "exact_match": exact}


# --------------------------------------------------------------------------
# One set
# --------------------------------------------------------------------------

HEADLINE = {"ner": "f1", "ner-typed": "f1", "re-i2b2": "micro_f1", "re-gad": "micro_f1",
            "nli": "accuracy", "pubmedqa": "accuracy", "hoc": "micro_f1"}
"""The metric each task's table row shows (the paper's)."""


@dataclass
class SetScore:
    task: str
    samples: int
    metrics: dict
    parse: dict
    seed_compat: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"task": self.task, "samples": self.samples, "metrics": self.metrics, "parse": self.parse}
        if self.seed_compat is not None:
            out["seed_compat"] = self.seed_compat
        return out


def score_set(task: str, inputs: Sequence[str], golds: Sequence, answers: Sequence[str]) -> SetScore:
    """Parse every answer of one set and score it against its gold labels.

    `inputs`, `golds` (a record's ``gold``: NER tag tuple, label or label tuple) and `answers`
    (generated texts) are parallel, one per sample. NER sets also get the seed-compatible
    score (`ner_seed_compat`, on the gold answer text ``format_ner(input tokens, gold)``).
    """
    t = tasks.TASKS[task]
    parsed = [parse_answer(task, a, i) for a, i in zip(answers, inputs)]
    n = len(parsed)
    failures = sum(p.failed for p in parsed)
    parse = {"failures": failures, "failure_rate": failures / n if n else 0.0}
    compat = None
    if t.kind == "ner":
        for k in ("missing", "extra", "malformed", "mismatched"):
            parse[f"{k}_lines"] = sum(getattr(p, k) for p in parsed)
        metrics = ner_scores(golds, [p.pred for p in parsed], t.typed)
        gold_answers = [tasks.format_ner(i.split(" "), g) for i, g in zip(inputs, golds)]
        compat = ner_seed_compat(gold_answers, answers, t.typed)
    elif t.kind == "label":
        metrics = label_scores(golds, [p.pred for p in parsed], t.labels, NEGATIVE.get(task))
    else:
        parse["unknown_parts"] = sum(p.unknown for p in parsed)
        metrics = multilabel_scores(golds, [p.pred for p in parsed])
    return SetScore(task, n, metrics, parse, compat)
