"""`medtune score`: a file of generations made elsewhere gives the report `medtune eval` writes
for the same answers, and a bad line is one error naming FILE:LINE."""
from __future__ import annotations

import json

import pytest

from medtune import cli
from medtune.data import tasks
from medtune.evaluation import generate as gen
from medtune.evaluation import run, sets
from tests.conftest import RECIPES, needs_shared_data

pytestmark = needs_shared_data()

SLICE = str(RECIPES / "eval" / "shared-slice.yaml")
N = "ncbi-disease-test"


def _answer(record) -> str:
    """A deterministic imperfect model: NER answers lose a line every third sample, tags flip."""
    if record.task == "ner":
        toks = record.input.split(" ")
        tags = ["I" if t == "B" else t for t in record.gold]          # lenient-only credit
        lines = tasks.format_ner(toks, tags).splitlines()
        return "\n".join(lines[1:] if len(toks) % 3 == 0 else lines)
    return "yes" if len(record.input) % 2 else "no, not at all"


@pytest.fixture()
def evaluated(tmp_path, monkeypatch):
    """`medtune eval` on the slice with the model replaced by `_answer` (no weights needed)."""
    monkeypatch.setattr(gen, "load", lambda model_dir: (None, None, "cpu"))
    monkeypatch.setattr(run, "stops", lambda model, tok, template: [])
    monkeypatch.setattr(gen, "prompt_ids", lambda record, template, tok: record)
    monkeypatch.setattr(gen, "generate", lambda model, tok, prompts, *a, **k: [_answer(r) for r in prompts])
    out = tmp_path / "eval"
    results = run.evaluate("fake-model", sets.load(SLICE), out, SLICE, say=lambda m: None)
    return out, results


def _sets(results: dict) -> dict:
    return json.loads(json.dumps(results["sets"]))


def test_score_of_evals_generations_equals_eval(evaluated, tmp_path, capsys):
    out, results = evaluated
    ncbi = results["sets"]["ncbi-disease-test"]
    # the fake model's flipped B -> I costs strict F1 but not lenient: the columns differ
    assert ncbi["metrics"]["f1"] < ncbi["metrics"]["lenient"]["f1"]
    assert cli.main(["score", str(out / "generations.jsonl"), "--recipe", SLICE,
                     "--out", str(tmp_path / "scored")]) == 0
    scored = json.loads((tmp_path / "scored" / "results.json").read_text())
    assert _sets(scored) == _sets(json.loads((out / "results.json").read_text()))
    md_eval, md_score = (out / "results.md").read_text(), (tmp_path / "scored" / "results.md").read_text()
    assert md_eval.split("\n", 1)[1] == md_score.split("\n", 1)[1]     # all but the model's name
    assert "| seed-compatible |" in md_score and "compare them with the **seed-compatible** column" in md_score
    assert not (tmp_path / "scored" / "generations.jsonl").exists()
    assert "wrote" in capsys.readouterr().out


def test_score_matches_by_input_in_any_order_with_other_keys(evaluated, tmp_path):
    out, results = evaluated
    samples, _ = sets.read_set(sets.load(SLICE).sets[0])
    rows = [{"input": x.record.input, "prediction": _answer(x.record)} for x in samples][::-1]
    f = tmp_path / "other-tool.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert cli.main(["score", str(f), "--recipe", SLICE, "--sets", "ncbi-disease-test",
                     "--out", str(tmp_path / "o"), "--model", "other tool"]) == 0
    got = json.loads((tmp_path / "o" / "results.json").read_text())
    assert got["model"] == "other tool" and list(got["sets"]) == ["ncbi-disease-test"]
    assert _sets(got)["ncbi-disease-test"] == _sets(results)["ncbi-disease-test"]


def test_llama_factory_predictions_score_in_file_order(evaluated, tmp_path):
    """LLaMA-Factory's do_predict writes {"prompt", "predict", "label"} per line, in dataset order."""
    out, results = evaluated
    samples, _ = sets.read_set(sets.load(SLICE).sets[0])
    rows = [{"prompt": "<the rendered prompt>", "predict": _answer(x.record), "label": "\n" + x.record.output}
            for x in samples]                  # LLaMA-Factory issue 4177: labels with a leading newline
    f = tmp_path / "generated_predictions.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert cli.main(["score", str(f), "--recipe", SLICE, "--sets", N, "--out", str(tmp_path / "o")]) == 0
    got = json.loads((tmp_path / "o" / "results.json").read_text())
    assert _sets(got)[N] == _sets(results)[N]


def _line(name, index, answer="x : O", **extra):
    return json.dumps({"set": name, "index": index, "answer": answer, **extra})


GOOD = [_line(N, i) for i in range(4)]

BAD = {
    "not json": (GOOD[:2] + ["{oops"] + GOOD[2:], ":3: not JSON"),
    "not an object": (["[1, 2]"] + GOOD, ":1: a line is a JSON object"),
    "unknown set": (GOOD + [_line("bc2gm-test", 0)], ":5: set = 'bc2gm-test' is not a set scored here"),
    "no answer key": (GOOD[:3] + [json.dumps({"set": N, "index": 3})], ":4: give the generated text"),
    "two answer keys": (GOOD[:3] + [json.dumps({"set": N, "index": 3, "answer": "a", "output": "b"})],
                        "found answer, output"),
    "index out of range": (GOOD + [_line(N, 4)], ":5: index = 4: set ncbi-disease-test has records 0..3"),
    "answered twice": (GOOD + [_line(N, 2)], ":5: set ncbi-disease-test record 2 already answered on line 3"),
    "one line too many": (GOOD + [json.dumps({"set": N, "answer": "a"})],
                          ":5: set ncbi-disease-test has 4 records and all are answered already"),
    # LLaMA-Factory issue 5023: every `label` of generated_predictions.jsonl came back as "9."
    "llama-factory labels not the data's": ([json.dumps({"set": N, "prompt": "p", "predict": "a", "label": "9."})],
                                            ":1: gold differs from record 0"),
    "unknown input": (GOOD[:3] + [json.dumps({"set": N, "input": "not a sentence", "answer": "a"})],
                      ":4: input matches no record"),
    "gold differs": (GOOD[:3] + [_line(N, 3, gold="x : O")], ":4: gold differs from record 3"),
    "a record left out": (GOOD[:3], "set ncbi-disease-test: 1 of 4 records have no generation (first: index 3)"),
    "empty": ([], "no generations in it"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_generations_file_is_one_line_naming_file_and_line(case, tmp_path, capsys):
    lines, want = BAD[case]
    f = tmp_path / "gens.jsonl"
    f.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("an earlier report\n")
    assert cli.main(["score", str(f), "--recipe", SLICE, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"medtune: error: {f}"), err
    assert want in err, err
    assert (out / "results.md").read_text() == "an earlier report\n"    # nothing written is lost


def test_missing_generations_file(tmp_path, capsys):
    assert cli.main(["score", str(tmp_path / "nope.jsonl"), "--recipe", SLICE, "--out", str(tmp_path)]) == 2
    assert "nope.jsonl: no such generations file" in capsys.readouterr().err


@pytest.mark.xfail(strict=True, reason="review: `medtune score` has no tokenizer and does not cut an answer at "
                   "a stop string, while `medtune eval` does (generate.answer_text); an answer decoded with "
                   "its special tokens (vLLM/LLaMA-Factory without skip_special_tokens) loses the tag of its "
                   "last line ('b : B</s>' is malformed)")
def test_score_of_answers_carrying_a_stop_string_equals_without(tmp_path):
    loaded = run._load_sets(sets.load(SLICE), SLICE, None, [N])
    s, samples, _ = loaded[0]
    x = next(x for x in samples if x.record.gold[-2] != "O")   # "... leukaemia : I\n. : O"
    rows = [{"set": N, "index": x.index, "answer": x.record.output} for x in samples]
    plain, marked = tmp_path / "plain.jsonl", tmp_path / "marked.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = x.record.output.split("\n")     # the model stopped after the entity, the row went on
    rows[x.index]["answer"] = "\n".join(lines[:-2] + [lines[-2] + "</s>", lines[-1]])
    marked.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = run.score(plain, sets.load(SLICE), tmp_path / "a", SLICE, only=[N])
    b = run.score(marked, sets.load(SLICE), tmp_path / "b", SLICE, only=[N])
    assert b["sets"][N]["metrics"]["f1"] == a["sets"][N]["metrics"]["f1"] == 1.0
