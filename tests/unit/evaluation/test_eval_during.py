"""What task_metrics logs: every float metric `medtune eval` reports, under eval/<set>/<metric>."""
from __future__ import annotations

from medtune.evaluation import run, sets
from medtune.evaluation.during import flat_metrics
from medtune.evaluation.sets import Sample
from medtune.data.formats.records import Record


def test_flat_metrics_names_every_float_metric_of_each_set(tmp_path):
    ner = [Sample("ner", 0, Record("Tag", "aspirin helps", "aspirin : B\nhelps : O", "ner", ("B", "O"), "x")),
           Sample("ner", 1, Record("Tag", "no drug", "no : O\ndrug : O", "ner", ("O", "O"), "x"))]
    qa = [Sample("qa", i, Record("Q", "ctx", gold, "pubmedqa", gold, "x")) for i, gold in enumerate(["yes", "no"])]
    per_set = [(sets.EvalSet(path="a", name="ner"), ner, 0, ["aspirin : B\nhelps : O", "no : B\ndrug : O"]),
               (sets.EvalSet(path="b", name="qa", format="pubmedqa"), qa, 0, ["yes", "maybe"])]
    results = run.report(per_set, {"model": "m"}, tmp_path, generations=False)
    got = flat_metrics(results)
    assert got["eval/ner/precision"] == 0.5 and got["eval/ner/recall"] == 1.0
    assert got["eval/ner/f1"] == results["sets"]["ner"]["metrics"]["f1"] == 2 / 3
    assert got["eval/ner/lenient_f1"] == 2 / 3 and "eval/ner/seed_compat_f1" in got
    assert got["eval/ner/parse_failure_rate"] == 0.0
    assert got["eval/qa/accuracy"] == 0.5 and got["eval/qa/parse_failure_rate"] == 0.0
    assert "eval/ner/tokens" not in got and "eval/qa/per_label_f1" not in got  # counts and tables stay out
    assert all(isinstance(v, float) for v in got.values())
