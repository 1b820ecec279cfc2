"""PubMedQA PQA-L: ``ori_pqal.json`` and the test ids in ``test_ground_truth.json``.

``ori_pqal.json`` maps a PMID to ``{QUESTION, CONTEXTS[], final_decision, ...}``;
``test_ground_truth.json`` (beside it) maps the 500 test PMIDs to their
answers. ``split: train`` reads the 500 items not in the test set (the paper
trained on train splits only), ``test`` the 500 test items, ``all`` all 1,000::

    input:  "Context: <the abstract's contexts, joined by spaces>\\nQuestion: <QUESTION>"
    output: "yes" | "no" | "maybe"
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from medtune.data import tasks
from medtune.data.formats.files import SourceError, read_text, split_file
from medtune.data.formats.records import Malformed, Record

SPLITS = ("train", "test", "all")
TEST_FILE = "test_ground_truth.json"


def files(path: str, split: str = "train") -> list[Path]:
    if split not in SPLITS:
        raise SourceError(f"{path}: PubMedQA split '{split}' is not one of {', '.join(SPLITS)}")
    main = split_file(path, split, ["ori_pqal.json"])
    if split == "all":
        return [main]
    test = main.parent / TEST_FILE
    if not test.is_file():
        raise SourceError(f"{test} does not exist (needed for PubMedQA split '{split}'; "
                          "or use split: all)")
    return [main, test]


def read(path: str, split: str = "train") -> Iterator[Record | Malformed]:
    found = files(path, split)
    main = found[0]
    text = read_text(main)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        yield Malformed(str(main), err.lineno, f"bad JSON: {err.msg}")
        return
    if not isinstance(items, dict):
        yield Malformed(str(main), 1, "not a JSON object of PMID -> item")
        return
    test_ids: set[str] = set()
    if split != "all":
        test_ids = set(json.loads(read_text(found[1])))
    for pmid, item in items.items():
        if (split == "test") != (pmid in test_ids) and split != "all":
            continue
        problem = _problem(item)
        if problem:
            yield Malformed(str(main), _line_of(text, pmid), f"item {pmid}: {problem}")
            continue
        answer = tasks.canonical_label(item["final_decision"], tasks.PUBMEDQA_LABELS)
        context = " ".join(c.strip() for c in item["CONTEXTS"])
        yield Record("", f"Context: {context}\nQuestion: {item['QUESTION'].strip()}", answer,
                     "pubmedqa", answer)


def _problem(item) -> str | None:
    if not isinstance(item, dict):
        return "not a JSON object"
    if not isinstance(item.get("QUESTION"), str) or not item["QUESTION"].strip():
        return "missing QUESTION"
    ctx = item.get("CONTEXTS")
    if not isinstance(ctx, list) or not ctx or not all(isinstance(c, str) for c in ctx):
        return "missing CONTEXTS (a list of strings)"
    answer = item.get("final_decision")
    if not isinstance(answer, str) or not answer.strip():
        return "missing final_decision"
    if tasks.canonical_label(answer, tasks.PUBMEDQA_LABELS) is None:
        return f"unknown final_decision {answer!r} (expected yes, no or maybe)"
    return None


def _line_of(text: str, pmid: str) -> int:
    at = text.find(f'"{pmid}"')
    return text.count("\n", 0, at) + 1 if at >= 0 else 1
