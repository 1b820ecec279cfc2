"""Evaluation scoring: gold scores 1.0, perturbations score exactly what seqeval says,
the seed's token-keyed score is reproduced on hand-computed cases, the position-aligned rule
gives no credit to a misaligned line, and malformed answers are counted, never fatal."""
from __future__ import annotations

import random

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from medtune.data import tasks
from medtune.data.formats import READERS
from medtune.evaluation import metrics, run
from tests.conftest import SHARED_DATA, needs_shared_data

SHARED_SETS = [("ncbi_disease", "conll", "devel"), ("ncbi_disease", "conll", "test"),
               ("bc5cdr_chem", "conll", "devel"), ("bc5cdr_chem", "conll", "test"),
               ("pubmedqa", "pubmedqa", "test")]


def _records(corpus: str, fmt: str, split: str):
    return list(READERS[fmt].read(str(SHARED_DATA / corpus), split=split))


def _score(records, answers):
    return metrics.score_set(records[0].task, [r.input for r in records], [r.gold for r in records],
                             answers)


@needs_shared_data()
@pytest.mark.parametrize("corpus,fmt,split", SHARED_SETS)
def test_gold_scores_one_on_every_shared_corpus(corpus, fmt, split):
    records = _records(corpus, fmt, split)
    s = _score(records, [r.output for r in records])
    assert s.parse["failures"] == 0
    headline = s.metrics[metrics.HEADLINE[records[0].task]]
    assert headline == 1.0
    if records[0].task == "ner":
        assert s.metrics["precision"] == s.metrics["recall"] == 1.0
        assert s.metrics["gold_entities"] == sum(tasks.mentions(r.gold) for r in records)
    else:
        assert s.metrics["macro_f1"] == 1.0


def _drop(tags, rng):
    out = list(tags)
    starts = [i for i, t in enumerate(out) if t == "B"]
    if starts:
        i = rng.choice(starts)
        out[i] = "O"
        j = i + 1
        while j < len(out) and out[j] == "I":
            out[j] = "O"
            j += 1
    return tuple(out)


def _shift(tags, rng):
    return ("O",) + tuple(tags[:-1]) if rng.random() < 0.5 else tuple(tags[1:]) + ("O",)


def _iob2(seqs):
    return [[t if t == "O" else f"{t}-ENT" for t in s] for s in seqs]


@needs_shared_data()
@pytest.mark.parametrize("perturb", [_drop, _shift])
def test_perturbed_gold_scores_exactly_as_seqeval(perturb):
    records = _records("ncbi_disease", "conll", "devel")
    rng = random.Random(0)
    perturbed = [perturb(r.gold, rng) if rng.random() < 0.3 else r.gold for r in records]
    answers = [tasks.format_ner(r.input.split(" "), p) for r, p in zip(records, perturbed)]
    s = _score(records, answers)
    g, p = _iob2([r.gold for r in records]), _iob2(perturbed)
    kw = dict(mode="strict", scheme=IOB2)
    assert s.metrics["precision"] == precision_score(g, p, **kw)
    assert s.metrics["recall"] == recall_score(g, p, **kw)
    assert s.metrics["f1"] == f1_score(g, p, **kw)
    assert 0 < s.metrics["f1"] < 1


def test_retyped_entities_score_exactly_as_seqeval():
    toks = "a b c d e f g".split()
    gold = [("B-PROBLEM", "I-PROBLEM", "O", "B-TEST", "O", "B-TREATMENT", "I-TREATMENT")] * 3
    pred = [("B-PROBLEM", "I-PROBLEM", "O", "B-TREATMENT", "O", "B-TREATMENT", "I-TREATMENT"),
            ("B-TEST", "I-TEST", "O", "B-TEST", "O", "B-TREATMENT", "I-TREATMENT"),
            ("B-PROBLEM", "I-TEST", "O", "B-TEST", "O", "O", "O")]
    answers = [tasks.format_ner(toks, p) for p in pred]
    s = metrics.score_set("ner-typed", [" ".join(toks)] * 3, gold, answers)
    kw = dict(mode="strict", scheme=IOB2)
    gl, pl = [list(x) for x in gold], [list(x) for x in pred]
    assert s.metrics["precision"] == precision_score(gl, pl, **kw)
    assert s.metrics["recall"] == recall_score(gl, pl, **kw)
    assert s.metrics["f1"] == f1_score(gl, pl, **kw)
    assert s.parse["failures"] == 0


def test_untyped_tags_become_one_type_for_seqeval():
    assert metrics.to_iob2(("O", "B", "I", "B"), typed=False) == ["O", "B-ENT", "I-ENT", "B-ENT"]
    assert metrics.to_iob2(("B-TEST", "I-TEST"), typed=True) == ["B-TEST", "I-TEST"]
    # strict IOB2: an I without its B is no entity
    r = metrics.ner_prf([("B", "I", "O")], [("O", "I", "O")], typed=False)
    assert r["pred_entities"] == 0 and r["f1"] == 0.0


@needs_shared_data()
def test_seed_compat_collapses_repeated_tokens_on_ncbi_devel():
    records = _records("ncbi_disease", "conll", "devel")
    s = _score(records, [r.output for r in records])
    assert s.metrics["tokens"] == 23969          # position-aligned: every token scored
    assert s.seed_compat["tokens"] == 20929      # the seed's dict keyed by token string
    # the report shows both numbers
    results = {"model": "m", "paper_source": "p",
               "sets": {"ncbi-disease-devel": {**s.to_dict(), "headline": "f1"}}}
    md = run.table(results)
    assert "20929 of 23969 tokens" in md
    assert "| seed-compatible |" in md and "| ours lenient |" in md


def test_token_keyed_keeps_one_tag_per_token_string():
    toks, tags = ["A", "-", "T", "-", "A"], ["B", "I", "I", "O", "O"]
    assert metrics.token_keyed(toks, tags) == (["A", "-", "T"], ["O", "O", "I"])


SENT = ["Patients", "with", "cystic", "fibrosis", "."]
GOLD = ("O", "O", "B", "I", "O")

MALFORMED = {
    "empty": ("", dict(missing=5)),
    "truncated": ("Patients : O\nwith : O\ncystic : B\nfibr", dict(missing=1, malformed=1)),
    "chatter": ("Sure! Here are the tags:\nPatients : O\nwith : O\ncystic : B\nfibrosis : I\n. : O",
                dict(malformed=1, extra=1)),
    "wrong separator": ("Patients - O\nwith - O\ncystic - B\nfibrosis - I\n. - O", dict(malformed=5)),
    "too few lines": ("Patients : O\nwith : O", dict(missing=3)),
    "too many lines": ("\n".join(f"{t} : {g}" for t, g in zip(SENT, GOLD)) + "\nagain : O\nmore : B",
                       dict(extra=2)),
    "unknown tag": ("Patients : O\nwith : X\ncystic : B\nfibrosis : I\n. : O", dict(malformed=1)),
    "garbage": ("\x00\x01 :::: \n\n : \n", dict(malformed=2, missing=3)),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_ner_answers_are_counted_not_fatal(case):
    text, want = MALFORMED[case]
    s = metrics.score_set("ner", [" ".join(SENT)], [GOLD], [text])
    assert s.parse["failures"] == 1 and s.parse["failure_rate"] == 1.0
    for k in ("missing", "extra", "malformed"):
        assert s.parse[f"{k}_lines"] == want.get(k, 0), (case, k, s.parse)
    assert 0.0 <= s.metrics["f1"] <= 1.0


def test_well_formed_ner_answer_is_no_failure():
    s = metrics.score_set("ner", [" ".join(SENT)], [GOLD], [tasks.format_ner(SENT, GOLD)])
    assert s.parse["failures"] == 0 and s.metrics["f1"] == 1.0


def test_label_answers_tolerate_case_and_punctuation_and_count_failures():
    gold = ["yes", "no", "maybe", "yes", "no"]
    answers = [" Yes.", "NO, the trial shows no effect", "maybe", "I cannot tell", ""]
    s = metrics.score_set("pubmedqa", [""] * 5, gold, answers)
    assert s.parse["failures"] == 2
    assert s.metrics["accuracy"] == 3 / 5
    # per-class F1: yes 2/3 (tp 1, fn 1), no 2/3, maybe 1 -> macro (2/3 + 2/3 + 1) / 3
    assert s.metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_re_micro_f1_leaves_out_no_relation():
    gold = ["TrAP", "No Relations", "PIP", "No Relations"]
    pred = ["TrAP", "TrAP", "No Relations", "No Relations"]
    s = metrics.score_set("re-i2b2", [""] * 4, gold, pred)
    # relation classes: tp 1 (TrAP), fp 1 (TrAP for No Relations), fn 1 (PIP missed)
    assert s.metrics["micro_f1"] == pytest.approx(0.5)
    assert s.metrics["accuracy"] == 0.5


def test_nli_accuracy_and_hoc_micro_f1():
    s = metrics.score_set("nli", [""] * 3, ["Entailment", "Neutral", "Contradiction"],
                          ["entailment.", "Contradiction", "blah"])
    assert s.metrics["accuracy"] == pytest.approx(1 / 3) and s.parse["failures"] == 1
    ps, a = "Sustaining proliferative signaling (PS)", "Inducing angiogenesis (A)"
    s = metrics.score_set("hoc", [""] * 3, [(a, ps), (), (ps,)], ["PS, inducing angiogenesis", "None", "PS, foo"])
    assert s.metrics["micro_f1"] == 1.0
    assert s.parse["failures"] == 1 and s.parse["unknown_parts"] == 1


# --------------------------------------------------------------------------
# The seed's NER score, replayed on small cases with F1 computed by hand
# --------------------------------------------------------------------------

# (gold answer, generated answer, typed, seed-compatible F1 computed by hand).
# Entities below are (first, last) positions in the gold's distinct tokens, read in
# seqeval's default (conlleval-like) mode, where an I after O starts an entity.
SEED_CASES = {
    # the issue's two right values
    "answer skips a leading O line": ("x : O\ny : B\nz : O", "y : B\nz : O", False, 1.0),
    "I after O starts an entity": ("a : O\nb : B\nc : O", "a : O\nb : I\nc : O", False, 1.0),
    # gold dict {the: O, cell: I, dog: B} -> O I B: entities (1,1) (2,2);
    # answer dict {the: B, cell: I, dog: B} -> B I B: (0,1) (2,2); tp 1, P 1/2, R 1/2
    "repeated gold token keeps its last tag": ("the : B\ncell : I\nthe : O\ndog : B",
                                               "the : B\ncell : I\ndog : B", False, 0.5),
    # gold B O B: (0,0) (2,2); answer's p is last O -> O O B: (2,2); P 1, R 1/2 -> 2/3
    "repeated answer token keeps its last tag": ("p : B\nq : O\nr : B", "p : B\nq : O\nr : B\np : O",
                                                 False, 2 / 3),
    # gold B I O B: (0,1) (3,3); c, d missing -> O: B I O O: (0,1); P 1, R 1/2
    "missing lines are O": ("a : B\nb : I\nc : O\nd : B", "a : B\nb : I", False, 2 / 3),
    # tokens the gold lacks are never looked up
    "extra lines are ignored": ("a : O\nb : B", "Sure : O\na : O\nb : B\nextra : B", False, 1.0),
    # B-Disease is not B/I/O -> O: no predicted entity, gold (0,1): P 0, R 0
    "typed tags in an untyped set are O": ("a : B\nb : I\nc : O", "a : B-Disease\nb : I-Disease\nc : O",
                                           False, 0.0),
    # lower-case b is not B -> O: O O B: (2,2); gold (0,0) (2,2); P 1, R 1/2
    "a lower-case tag is O": ("a : B\nb : O\nc : B", "a : b\nb : O\nc : B", False, 2 / 3),
    # 'b - B' and 'c:I' have no ' : ' and are skipped: pred O B O O B: (1,1) (4,4);
    # gold O B I O B: (1,2) (4,4); tp 1, P 1/2, R 1/2
    "malformed lines are skipped": ("a : O\nb : B\nc : I\nd : O\ne : B",
                                    "a : O\nb - B\nb : B\nc:I\nd : O\ne : B", False, 0.5),
    # I I I is one entity (0,2) in the default mode, equal to gold B I I
    "an entity may open with I": ("a : B\nb : I\nc : I", "a : I\nb : I\nc : I", False, 1.0),
    "an empty answer is all O": ("a : B\nb : O", "", False, 0.0),
    # the token ':' is split at the last ' : '
    "a colon token": (": : B\nx : O", ": : B\nx : O", False, 1.0),
    # typed: a bare B is not a typed tag -> O; gold (0,1) PROBLEM (3,3) TEST; pred (0,1); P 1, R 1/2
    "typed set: a bare B is O": ("chest : B-PROBLEM\npain : I-PROBLEM\non : O\nCT : B-TEST",
                                 "chest : B-PROBLEM\npain : I-PROBLEM\non : O\nCT : B", True, 2 / 3),
    # typed: right span, wrong type: (0,1) TEST vs (0,1) PROBLEM; tp 0
    "typed set: the type must match": ("chest : B-PROBLEM\npain : I-PROBLEM", "chest : B-TEST\npain : I-TEST",
                                       True, 0.0),
}


@pytest.mark.parametrize("case", list(SEED_CASES))
def test_seed_compat_replays_the_seeds_rules(case):
    gold, answer, typed, f1 = SEED_CASES[case]
    got = metrics.ner_seed_compat([gold], [answer], typed)
    assert got["f1"] == pytest.approx(f1, abs=1e-12), (case, got)


def test_seed_compat_is_micro_averaged_over_sentences():
    # sentence 1: tp 1; sentence 2: one predicted entity where gold has none (fp 1): P 1/2, R 1 -> 2/3
    got = metrics.ner_seed_compat(["a : B\nb : O", "c : O\nd : O"], ["a : B\nb : O", "c : B\nd : O"], False)
    assert (got["precision"], got["recall"]) == (0.5, 1.0)
    assert got["f1"] == pytest.approx(2 / 3, abs=1e-12)
    assert got["tokens"] == 4 and got["gold_entities"] == 1 and got["pred_entities"] == 2


def test_seed_tags_collapse_gold_and_look_up_the_answer():
    assert metrics.seed_tags("the : B\ncell : I\nthe : O\ndog : B", "dog : I\nthe : X\ncat : B") == \
        (["O", "I", "B"], ["O", "O", "I"])


# (tokens, gold, answer, position-aligned strict F1, lenient F1, seed-compatible F1), by hand
ALIGNED_CASES = {
    # every line misaligned (x was skipped): no credit; the seed keys by token and gives 1.0
    "skipped line": ("x y z", ("O", "B", "O"), "y : B\nz : O", 0.0, 0.0, 1.0),
    # strict IOB2: O I O has no entity; lenient: (1,1) equals gold's B
    "I after O": ("a b c", ("O", "B", "O"), "a : O\nb : I\nc : O", 0.0, 1.0, 1.0),
    # line 2 names 'x' where 'b' stands: b scores O (using its I would give 1.0); pred B O O:
    # (0,0) vs gold (0,1), tp 0 in both modes; the seed looks b up, misses it: B O O as well
    "misaligned line gets O": ("a b c", ("B", "I", "O"), "a : B\nx : I\nc : O", 0.0, 0.0, 0.0),
    # whitespace around the token is normalised: the line still aligns; typed tag read as B
    "spaces and a typed tag": ("a b", ("B", "O"), "  a   : B-Disease\nb : O", 1.0, 1.0, 0.0),
}


@pytest.mark.parametrize("case", list(ALIGNED_CASES))
def test_position_aligned_rule_in_both_modes_beside_the_seeds(case):
    tokens, gold, answer, strict, lenient, seed = ALIGNED_CASES[case]
    s = metrics.score_set("ner", [tokens], [gold], [answer])
    assert s.metrics["f1"] == strict
    assert s.metrics["lenient"]["f1"] == lenient
    assert s.seed_compat["f1"] == seed


def test_ner_prf_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode 'loose'"):
        metrics.ner_prf([("B",)], [("B",)], typed=False, mode="loose")


def test_seqeval_issue_23_an_entity_opened_by_I_counts_only_in_lenient_mode():
    """chakki-works/seqeval#23: gold B-Phone I-Phone, predicted I-Phone I-Phone is 1.0 in the
    default mode and 0.0 in strict IOB2; medtune reports both, the seed's score is the default mode's."""
    s = metrics.score_set("ner-typed", ["(978) 934-3623"], [("B-PHONE", "I-PHONE")],
                          ["(978) : I-PHONE\n934-3623 : I-PHONE"])
    assert (s.metrics["f1"], s.metrics["lenient"]["f1"], s.seed_compat["f1"]) == (0.0, 1.0, 1.0)
    assert s.metrics["pred_entities"] == 0 and s.metrics["lenient"]["pred_entities"] == 1
