"""The parsers evaluation will use: tolerant where models err, counting what they forgive."""
from __future__ import annotations

import pytest

from medtune.data import tasks
from medtune.data.tasks import (GAD_LABELS, HOC_LABELS, I2B2_2010_LABELS, NLI_LABELS, PUBMEDQA_LABELS,
                                format_hoc, format_ner, parse_hoc, parse_label, parse_ner)

TOKENS = ["Patients", "with", "cystic", "fibrosis", "."]
GOLD = ("O", "O", "B", "I", "O")


def test_ner_round_trip_and_token_colon():
    assert parse_ner(format_ner(TOKENS, GOLD), TOKENS).tags == GOLD
    toks, tags = [":", "a:b", "x"], ("O", "B", "I")
    assert format_ner(toks, tags).splitlines()[0] == ": : O"
    assert parse_ner(format_ner(toks, tags), toks) == tasks.NerParse(tags)


# (generated answer, tags, missing, extra, malformed, mismatched)
NER_CASES = [
    ("Patients : O\nwith : O\ncystic : B\nfibrosis : I", ("O", "O", "B", "I", "O"), 1, 0, 0, 0),
    ("Patients : O\ncystic : B\nfibrosis : I\n. : O\nextra : O\nmore : B",
     ("O", "O", "O", "O", "O"), 0, 1, 0, 4),          # a dropped line: the shifted rest score O
    ("Patients : O\n with  : O\ncystic : B\nfibrosis : I\nFOO : I", ("O", "O", "B", "I", "O"), 0, 0, 0, 1),
    ("Patients : O\nwith - O\ncystic : X\nfibrosis : i\n. : O", ("O", "O", "O", "I", "O"), 0, 0, 2, 0),
    ("\nPatients : o\n\nwith:O\ncystic : B-Disease\nfibrosis : I.\n. : O\n", GOLD, 0, 0, 0, 0),
    ("", ("O",) * 5, 5, 0, 0, 0),
]


@pytest.mark.parametrize("text,tags,missing,extra,malformed,mismatched", NER_CASES)
def test_ner_parser_aligns_by_position_and_counts(text, tags, missing, extra, malformed, mismatched):
    got = parse_ner(text, TOKENS)
    assert got == tasks.NerParse(tags, missing, extra, malformed, mismatched)


def test_typed_ner_parser():
    toks = ["chest", "pain", "on", "CT"]
    gold = ("B-PROBLEM", "I-PROBLEM", "O", "B-TEST")
    assert parse_ner(format_ner(toks, gold), toks, is_typed=True).tags == gold
    got = parse_ner("chest : b-problem\npain : I\non : O\nCT : B-test", toks, is_typed=True)
    assert got.tags == ("B-PROBLEM", "O", "O", "B-TEST") and got.malformed == 1


@pytest.mark.parametrize("text,labels,want", [
    (" Entailment.", NLI_LABELS, "Entailment"),
    ("contradiction", NLI_LABELS, "Contradiction"),
    ("NEUTRAL\n", NLI_LABELS, "Neutral"),
    ("Yes, the trial shows a benefit.", PUBMEDQA_LABELS, "yes"),
    ("maybe", PUBMEDQA_LABELS, "maybe"),
    ("trnap", I2B2_2010_LABELS, "TrNAP"),
    ("TrAP.", I2B2_2010_LABELS, "TrAP"),
    ("No Relations", I2B2_2010_LABELS, "No Relations"),
    ("no relation", I2B2_2010_LABELS, "No Relations"),
    ("false", I2B2_2010_LABELS, "No Relations"),
    ("positive", GAD_LABELS, "Positive"),
    ("Negative!", GAD_LABELS, "Negative"),
    ("I cannot tell", NLI_LABELS, None),
    ("", GAD_LABELS, None),
])
def test_label_parser_is_case_and_punctuation_tolerant(text, labels, want):
    assert parse_label(text, labels) == want


def test_every_label_round_trips():
    for labels in (NLI_LABELS, PUBMEDQA_LABELS, I2B2_2010_LABELS, GAD_LABELS):
        for lab in labels:
            assert parse_label(lab, labels) == lab


def test_hoc_format_and_parse():
    assert format_hoc([]) == "None" and parse_hoc("None") == tasks.HocParse(())
    for lab in HOC_LABELS:
        assert parse_hoc(format_hoc([lab])).labels == (lab,)
    everything = format_hoc(HOC_LABELS)
    assert parse_hoc(everything).labels == HOC_LABELS and everything.count(", ") == 9
    got = parse_hoc("sustaining proliferative signalling, (A); Resisting cell death\nMetabolism")
    assert got.labels == ("Inducing angiogenesis (A)", "Resisting cell death (CD)",
                          "Sustaining proliferative signaling (PS)")
    assert got.unknown == 1


def test_registry_parse_dispatch():
    assert tasks.parse("ner", format_ner(TOKENS, GOLD), " ".join(TOKENS)) == GOLD
    assert tasks.parse("re-gad", "Positive") == "Positive"
    assert tasks.parse("hoc", "PS, A") == ("Inducing angiogenesis (A)", "Sustaining proliferative signaling (PS)")
    with pytest.raises(KeyError):
        tasks.parse("open-qa", "anything")


def test_ner_answer_lines_split_at_newline_only():
    """A token holding U+2028/U+0085 (text pasted from a PDF) stays one line of the answer."""
    toks = ["IL\u20282", "gene\u0085x", "level"]
    tags = ["B", "I", "O"]
    got = parse_ner(format_ner(toks, tags), toks)
    assert got.tags == tuple(tags) and got.mismatched == 0 and got.malformed == 0
