"""Bad input: each malformed line is skipped, counted and located, and nothing else changes.

Every case inserts one bad line (or sentence, or item) into a good fixture
file: the mixture must then report exactly one malformed record at that file
and line, with the promised reason, and hold exactly the same samples
(instructions included) as without it; ``data.strict: true`` makes it an
error naming the same place. Problems a recipe can show before any work
(missing file, unknown reader, ...) are one line each from the recipe check.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from medtune import config
from medtune.config import DataConfig, RecipeError, SourceConfig
from medtune.data import mixture
from medtune.data.prepare import prepare
from tests.conftest import RECIPES, REPO

CORPORA = REPO / "tests" / "assets" / "corpora"


def _insert_lines(after: int, *lines: str):
    """Insert `lines` after line `after` (1-based); the bad line is the last inserted."""
    def mutate(text: str) -> tuple[str, int]:
        rows = text.splitlines()
        rows[after:after] = list(lines)
        return "\n".join(rows) + "\n", after + len(lines)
    return mutate


def _conll_sentence(*token_lines: str, bad: int):
    """A new sentence after the first blank line; `bad` is its offending line (0-based)."""
    def mutate(text: str) -> tuple[str, int]:
        rows = text.splitlines()
        first_blank = rows.index("")
        rows[first_blank + 1:first_blank + 1] = [*token_lines, ""]
        return "\n".join(rows) + "\n", first_blank + 2 + bad
    return mutate


def _pubmedqa_item(item: dict):
    def mutate(text: str) -> tuple[str, int]:
        data = json.loads(text)
        data = {"99999999": item, **data}
        out = json.dumps(data, indent=1)
        return out, out[:out.index('"99999999"')].count("\n") + 1
    return mutate


GOOD_QA = {"QUESTION": "Q?", "CONTEXTS": ["C."], "final_decision": "yes"}

# (case, format, fixture file, options, mutation, reason the report must give)
CASES = [
    ("bad tag", "conll", "ncbi_disease/train.tsv", {},
     _conll_sentence("Acute\tO", "gout\tB_Disease", ".\tO", bad=1), "bad tag 'B_Disease'"),
    ("token line with no tag", "conll", "ncbi_disease/train.tsv", {},
     _conll_sentence("Acute\tO", "gout", ".\tO", bad=1), "token line with no tag"),
    ("untyped tag in typed file", "conll", "i2b2_2012/train.tsv", {"tags": "typed"},
     _conll_sentence("chest B-PROBLEM", "pain I", ". O", bad=1), "bad tag 'I'"),
    ("truncated JSON", "jsonl", "pmc_llama/train.jsonl", {},
     _insert_lines(1, '{"instruction": "Explain.", "input": "x", "output": "y"'), "bad JSON"),
    ("missing field", "jsonl", "pmc_llama/train.jsonl", {},
     _insert_lines(2, '{"input": "x", "output": "y"}'), "missing string field 'instruction'"),
    ("empty output", "jsonl", "pmc_llama/train.jsonl", {},
     _insert_lines(0, '{"instruction": "Explain.", "input": "x", "output": "  "}'), "empty output"),
    ("not an object", "jsonl", "pmc_llama/train.jsonl", {},
     _insert_lines(3, '["instruction", "output"]'), "not a JSON object"),
    ("unknown NLI label", "mednli", "mednli/mli_train_v1.jsonl", {},
     _insert_lines(2, '{"sentence1": "a.", "sentence2": "b.", "gold_label": "-"}'), "unknown gold_label '-'"),
    ("missing hypothesis", "mednli", "mednli/mli_train_v1.jsonl", {},
     _insert_lines(2, '{"sentence1": "a.", "gold_label": "neutral"}'), "missing string field 'sentence2'"),
    ("unknown relation", "i2b2-2010-re", "i2b2_2010_re/train.tsv", {},
     _insert_lines(3, "r0\t@treatment$ for @problem$ .\tTrXP"), "unknown label 'TrXP'"),
    ("no entity markers", "i2b2-2010-re", "i2b2_2010_re/train.tsv", {},
     _insert_lines(3, "r0\tThe treatment helped .\tTrIP"), "fewer than two entity markers"),
    ("unknown GAD label", "gad", "gad/train.tsv", {},
     _insert_lines(1, "@GENE$ and @DISEASE$ .\t2"), "unknown label '2'"),
    ("wrong column count", "gad", "gad/train.tsv", {},
     _insert_lines(2, "@GENE$ and @DISEASE$ with no label"), "1 tab-separated columns"),
    ("empty sentence", "gad", "gad/train.tsv", {},
     _insert_lines(2, "\t1"), "empty text"),
    ("unknown hallmark", "hoc", "hoc/dev.tsv", {},
     _insert_lines(2, "Glycolysis rose .\tMetabolism"), "unknown hallmark 'Metabolism'"),
    ("hallmark index out of range", "hoc", "hoc/train.tsv", {},
     _insert_lines(2, "0_0,10_1\tText .\td9"), "out of range"),
    ("unknown PubMedQA answer", "pubmedqa", "pubmedqa/ori_pqal.json", {"split": "all"},
     _pubmedqa_item({**GOOD_QA, "final_decision": "perhaps"}), "unknown final_decision 'perhaps'"),
    ("missing contexts", "pubmedqa", "pubmedqa/ori_pqal.json", {"split": "all"},
     _pubmedqa_item({"QUESTION": "Q?", "final_decision": "no"}), "missing CONTEXTS"),
]


def _copy(fixture: str, into: Path) -> Path:
    src = CORPORA / fixture
    shutil.copytree(src.parent, into / src.parent.name)
    return into / src.parent.name / src.name


def _source(path: Path, fmt: str, options: dict) -> SourceConfig:
    return SourceConfig(path=str(path), format=fmt, name="src", **options)


@pytest.mark.parametrize("case,fmt,fixture,options,mutate,reason", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_counted_located_and_changes_nothing_else(
        tmp_path, case, fmt, fixture, options, mutate, reason):
    good = _copy(fixture, tmp_path / "good")
    bad = _copy(fixture, tmp_path / "bad")
    text, line = mutate(good.read_text())
    bad.write_text(text)
    want, want_stats = mixture.build(DataConfig(sources=[_source(good, fmt, options)]), progress=False)
    got, stats = mixture.build(DataConfig(sources=[_source(bad, fmt, options)]), progress=False)
    st = stats["src"]
    assert want_stats["src"].malformed == 0 and st.malformed == 1
    assert st.first_problems == [f"{bad}:{line}: {st.first_problems[0].split(': ', 1)[1]}"]
    assert reason in st.first_problems[0]
    assert got == want and st.records == want_stats["src"].records  # nothing else changes
    with pytest.raises(RecipeError) as err:  # one line: the count, then the file:line: reason
        mixture.build(DataConfig(sources=[_source(bad, fmt, options)], strict=True), progress=False)
    assert err.value.problems == [f"recipe: data.strict = true: 1 malformed record(s) in source 'src': "
                                  f"{st.first_problems[0]}; fix them, or set data.strict: false to skip "
                                  "and count them"]


def test_table_has_at_least_ten_cases_over_every_format():
    assert len(CASES) >= 10
    assert {c[1] for c in CASES} == {"conll", "jsonl", "mednli", "i2b2-2010-re", "gad", "hoc", "pubmedqa"}


def test_a_truncated_json_file_is_one_malformed_record_and_says_so(tmp_path):
    bad = _copy("pubmedqa/ori_pqal.json", tmp_path)
    bad.write_text(bad.read_text()[:300])
    with pytest.raises(RecipeError) as err:
        mixture.build(DataConfig(sources=[_source(bad, "pubmedqa", {"split": "all"})]), progress=False)
    assert err.value.problems == [f"recipe: data.sources.0 (src): {bad}: no usable samples (malformed: 1); "
                                  f"first: {bad}:2: bad JSON: Unterminated string starting at"]


def test_only_the_first_few_problems_are_quoted_and_prepare_reports_them(tmp_path):
    good = _copy("mednli/mli_train_v1.jsonl", tmp_path)
    lines = good.read_text().splitlines()
    good.write_text("\n".join(lines + ["{broken"] * 8) + "\n")
    tree = {"model": {"tokenizer": str(_demo_tokenizer())},
            "data": {"sources": [{"path": str(good), "format": "mednli", "name": "nli"}], "max_tokens": 512}}
    tree["model"]["config"] = yaml.safe_load((RECIPES / "models" / "tiny-llama.yaml").read_text())["model"]["config"]
    seen: list[str] = []
    p = prepare(config.validate(tree, {}, "r.yaml"), log=seen.append)
    assert p.stats["sources"]["nli"]["malformed"] == 8 and p.stats["samples"] == 5
    assert len(seen) == mixture.SHOWN_PROBLEMS + 1 and seen[-1] == "... and 3 more malformed in 'nli'"
    assert seen[0] == f"skipped malformed record: {good}:6: bad JSON: Expecting property name enclosed in double quotes"


def _demo_tokenizer() -> Path:
    from tests.integration.helpers import demo_tokenizer_dir

    return demo_tokenizer_dir()


def _tree(**source) -> dict:
    return {"model": {"name_or_path": "some/model"},
            "data": {"sources": [{"path": str(CORPORA / "mednli"), "format": "mednli", **source}]}}


# (case, source settings, the one line the recipe check must give)
RECIPE_CASES = [
    ("missing file", {"path": "/nonexistent/mednli"}, "data.sources.0.path: /nonexistent/mednli does not exist"),
    ("missing split file", {"split": "validation"},
     "data.sources.0.path: " + str(CORPORA / "mednli") + ": no file for split 'validation' "
     "(looked for mli_validation_v1.jsonl, validation.jsonl)"),
    ("unknown reader", {"format": "medlni"}, "data.sources.0.format: unknown reader 'medlni': did you mean 'mednli'?"),
    ("unknown pool", {"instructions": "nil"}, "data.sources.0.instructions: unknown instruction pool 'nil': "
                                              "did you mean 'nli'?"),
    ("unset variable", {"path": "$NO_SUCH_VAR_FOR_MEDTUNE/mednli"},
     "$NO_SUCH_VAR_FOR_MEDTUNE/mednli: $NO_SUCH_VAR_FOR_MEDTUNE is not set"),
    ("setting of another reader", {"tags": "typed"}, "data.sources.0.tags: applies to format conll only"),
    ("bad PubMedQA split", {"path": str(CORPORA / "pubmedqa"), "format": "pubmedqa", "split": "dev"},
     "PubMedQA split 'dev' is not one of train, test, all"),
    ("non-positive weight", {"weight": 0}, "data.sources.0.weight = 0: must be greater than 0"),
]


@pytest.mark.parametrize("case,source,message", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_recipe_problems_are_one_line_before_any_work(tmp_path, case, source, message):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(_tree(**source)))
    with pytest.raises(RecipeError) as err:
        config.load(f)
    assert len(err.value.problems) == 1, err.value.problems
    assert message in err.value.problems[0] and err.value.problems[0].startswith(str(f))


def test_two_sources_with_one_name_are_refused(tmp_path):
    tree = _tree()
    tree["data"]["sources"] *= 2
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(tree))
    with pytest.raises(RecipeError, match="two sources are named 'mednli'"):
        config.load(f)


# ---- when nothing of a source survives, the error says why ----

def _int_outputs(tmp_path) -> Path:
    f = tmp_path / "x.jsonl"
    f.write_text("".join(json.dumps({"instruction": "Explain.", "input": "", "output": i}) + "\n"
                         for i in range(3)))
    return f


def _no_usable(f: Path) -> str:
    why = "'output' must be a string, not int"
    return (f"r.yaml: data.sources.1 (x): {f}: no usable samples (malformed: 3); "
            f"first: {f}:1: {why}; {f}:2: {why}; {f}:3: {why}")


def test_a_source_with_no_usable_record_names_the_first_reasons(tmp_path):
    """Even beside a good source: a source the recipe names never silently drops out of the mixture."""
    f = _int_outputs(tmp_path)
    tree = {"model": {"tokenizer": str(_demo_tokenizer())},
            "data": {"sources": [{"path": str(CORPORA / "mednli"), "format": "mednli"},
                                 {"path": str(f), "format": "jsonl"}]}}
    tree["model"]["config"] = yaml.safe_load((RECIPES / "models" / "tiny-llama.yaml").read_text())["model"]["config"]
    with pytest.raises(RecipeError) as err:
        prepare(config.validate(tree, {}, "r.yaml"), "r.yaml", log=lambda _: None)
    assert err.value.problems == [_no_usable(f)]


def test_no_usable_record_stops_before_a_tokenizer_is_trained(tmp_path):
    """sentencepiece used to stop with "[!sentences_.empty()]" on a tokenizer trained from no text."""
    from medtune.data.tokenizer import location

    f = _int_outputs(tmp_path)
    tree = {"model": yaml.safe_load((RECIPES / "models" / "tiny-llama.yaml").read_text())["model"],
            "data": {"sources": [{"path": str(CORPORA / "mednli"), "format": "mednli"},
                                 {"path": str(f), "format": "jsonl"}]}}
    recipe = config.validate(tree, {}, "r.yaml")
    assert recipe.model.train_tokenizer is not None
    with pytest.raises(RecipeError) as err:
        prepare(recipe, "r.yaml", log=lambda _: None)
    assert err.value.problems == [_no_usable(f)]
    assert not Path(location(recipe)).exists()
