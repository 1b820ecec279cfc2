"""Scores: generated answers, parsed by the inverse of the data formatters, against gold.

Parsing is `medtune.data.tasks` (the formatters' inverses); this module
counts what the parsers had to forgive and computes each task's metrics.

| task        | metrics                                                        |
|-------------|----------------------------------------------------------------|
| ner         | entity-level P/R/F1, seqeval strict IOB2 (B/I -> B-ENT/I-ENT)  |
| ner-typed   | entity-level P/R/F1, seqeval strict IOB2 on the typed tags     |
| re-i2b2/gad | accuracy; micro-F1 over the relation classes (not the negative)|
| nli         | accuracy                                                       |
| pubmedqa    | accuracy; macro-F1 over yes/no/maybe                           |
| hoc         | micro-F1 over (document, hallmark) pairs                       |

Every set also reports its parse failures: an NER answer with any missing,
extra or malformed line, a label answer that names no label, a HoC answer
with a part that names no hallmark. A failure never stops scoring: the
unreadable part counts as ``O`` (NER), as no label (always wrong) or is
ignored (HoC).

NER is position-aligned: line i of the answer is the tag of input token i.
``seed_compat`` also computes the seed's token-keyed score, where each
sentence's gold and predicted tags were stored in a dict keyed by the token
string, so a repeated token ("the", ",") keeps one tag and the sentence
shrinks (NCBI-disease devel: 23,969 tokens become 20,929).
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


def ner_prf(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], typed: bool) -> dict:
    """Entity-level precision, recall and F1 (seqeval, strict IOB2 mode) and the counts behind them."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2, Entities

    g = [to_iob2(s, typed) for s in gold]
    p = [to_iob2(s, typed) for s in pred]
    assert all(len(a) == len(b) for a, b in zip(g, p)) and len(g) == len(p), "one tag per token"
    kw = dict(mode="strict", scheme=IOB2, zero_division=0)
    return {
        "precision": float(precision_score(g, p, **kw)),
        "recall": float(recall_score(g, p, **kw)),
        "f1": float(f1_score(g, p, **kw)),
        "tokens": sum(len(s) for s in g),
        "gold_entities": sum(len(e) for e in Entities(g, IOB2).entities),
        "pred_entities": sum(len(e) for e in Entities(p, IOB2).entities),
    }


def token_keyed(tokens: Sequence[str], tags: Sequence[str]) -> tuple[list[str], list[str]]:
    """The seed's view of one sentence: a dict token -> tag (a repeated token keeps its last tag)."""
    d: dict[str, str] = {}
    for tok, tag in zip(tokens, tags):
        d[tok] = tag
    return list(d), list(d.values())


def ner_seed_compat(sentences: Sequence[Sequence[str]], gold: Sequence[Sequence[str]],
                    pred: Sequence[Sequence[str]], typed: bool) -> dict:
    """The seed's token-keyed score: seqeval on the dict-collapsed sentences."""
    g = [token_keyed(toks, tags)[1] for toks, tags in zip(sentences, gold)]
    p = [token_keyed(toks, tags)[1] for toks, tags in zip(sentences, pred)]
    return ner_prf(g, p, typed)


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


def score_set(task: str, inputs: Sequence[str], golds: Sequence, answers: Sequence[str],
              seed_compat: bool = False) -> SetScore:
    """Parse every answer of one set and score it against its gold labels."""
    t = tasks.TASKS[task]
    parsed = [parse_answer(task, a, i) for a, i in zip(answers, inputs)]
    n = len(parsed)
    failures = sum(p.failed for p in parsed)
    parse = {"failures": failures, "failure_rate": failures / n if n else 0.0}
    compat = None
    if t.kind == "ner":
        for k in ("missing", "extra", "malformed", "mismatched"):
            parse[f"{k}_lines"] = sum(getattr(p, k) for p in parsed)
        preds = [p.pred for p in parsed]
        metrics = ner_prf(golds, preds, t.typed)
        if seed_compat:
            compat = ner_seed_compat([i.split(" ") for i in inputs], golds, preds, t.typed)
    elif t.kind == "label":
        metrics = label_scores(golds, [p.pred for p in parsed], t.labels, NEGATIVE.get(task))
    else:
        parse["unknown_parts"] = sum(p.unknown for p in parsed)
        metrics = multilabel_scores(golds, [p.pred for p in parsed])
    return SetScore(task, n, metrics, parse, compat)
