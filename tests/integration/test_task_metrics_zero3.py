"""Done-means 2 of issue 17, on its own: task metrics from the sharded ZeRO-3 model (2 CPU ranks)
equal `medtune eval`'s on the same weights exported, answer for answer."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medtune.launcher.run import free_port
from tests.conftest import REPO, SHARED_DATA, needs_shared_data
from tests.integration.helpers import medtune, save_tiny_model, write_recipe

pytestmark = needs_shared_data()


def eval_recipe(path, batch_size: int):
    """NCBI-disease test (NER) and PubMedQA test (QA): 3 + 2 samples, so 2 ranks get uneven shares."""
    return write_recipe(path, {
        "sets": [{"name": "ncbi-disease-test", "path": str(SHARED_DATA / "ncbi_disease"), "format": "conll",
                  "split": "test", "instructions": "ner-disease", "limit": 3},
                 {"name": "pubmedqa-test", "path": str(SHARED_DATA / "pubmedqa"), "format": "pubmedqa",
                  "split": "test", "instructions": "pubmedqa", "limit": 2}],
        "template": "paper",
        "generation": {"max_new_tokens": 12, "num_beams": 1, "batch_size": batch_size},
    })


def run_driver(model, recipe, run_dir, step: int, procs: int = 2,
               env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                           "--master_port", str(free_port()), str(REPO / "tests" / "integration" / "during_driver.py"),
                           str(model), str(recipe), str(run_dir), str(step)],
                          capture_output=True, text=True, timeout=400, env=env)


def stop_early_on_rank_1(model_dir, recipe) -> int:
    """Make the answer of sample 1 (rank 1's) stop after a few tokens while rank 0's run on.

    Greedy ids of every sample from the plain model; the first token of sample 1's answer
    (after its first) that no rank-0 answer holds becomes one more stop id of the model's
    generation config, which `medtune eval` and `task_metrics` both stop on. Returns it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from medtune.evaluation import generate as gen
    from medtune.evaluation import run, sets

    r = sets.load(recipe)
    samples = [x for _, xs, _ in run._load_sets(r, str(recipe), None, None) for x in xs]
    tok = AutoTokenizer.from_pretrained(model_dir)
    net = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    stops = run.stops(net, tok, r.template)
    ids = []
    with torch.no_grad():
        for x in samples:
            p = torch.tensor([gen.prompt_ids(x.record, r.template, tok)])
            out = net.generate(input_ids=p, attention_mask=torch.ones_like(p), do_sample=False,
                               max_new_tokens=r.generation.max_new_tokens, eos_token_id=stops)
            ids.append(out[0, p.shape[1]:].tolist())
    rank0 = {t for i in range(0, len(ids), 2) for t in ids[i]}
    assert all(len(ids[i]) == r.generation.max_new_tokens for i in range(0, len(ids), 2))  # none stops
    stop = next(t for t in ids[1][1:-2] if t not in rank0)
    cfg = GenerationConfig.from_pretrained(model_dir)
    eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
    cfg.eos_token_id = [*(e for e in eos if e is not None), stop]
    cfg.save_pretrained(model_dir)
    return stop


@pytest.mark.parametrize("batch_size,early_stop", [(2, False), (1, True)])
def test_task_metrics_under_zero3_equal_medtune_eval(tmp_path, batch_size, early_stop):
    """batch 2, shares of 3 and 2 samples: rank 0 makes 2 generate calls, rank 1 only 1 of its own.
    batch 1 with an early stop on rank 1 (transformers#18281, DeepSpeed#2022, DeepSpeedExamples#636:
    under ZeRO-3 a rank whose generation ends first stops joining the parameter gathers and the
    others hang unless ``synced_gpus=True``): rank 1's answer ends after a few tokens, rank 0's run on."""
    model = save_tiny_model(tmp_path / "model", seed=3)
    recipe = eval_recipe(tmp_path / "eval.yaml", batch_size)
    if early_stop:
        stop_early_on_rank_1(model, recipe)
    run = tmp_path / "run"
    run.mkdir()
    proc = run_driver(model, recipe, run, step=7)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((run / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # every rank returns the same dict
    for r in ranks:
        assert r["rng_unchanged"] and r["training"] and r["partitioned"]
        assert r["attention"] == r["expected_attention"] == "medtune_per_sample"  # training's, back
    got = ranks[0]["metrics"]

    out = tmp_path / "eval"
    medtune("eval", "--model", str(model), "--recipe", str(recipe), "--out", str(out))
    want = json.loads((out / "results.json").read_text())["sets"]
    step_dir = run / "evals" / "step-7"
    assert (step_dir / "generations.jsonl").read_text() == (out / "generations.jsonl").read_text()
    for name, e in want.items():
        assert got[f"eval/{name}/{e['headline']}"] == e["metrics"][e["headline"]]
        assert got[f"eval/{name}/parse_failure_rate"] == e["parse"]["failure_rate"]
        lines = (step_dir / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == e["samples"] == {"ncbi-disease-test": 3, "pubmedqa-test": 2}[name]
    assert got["eval/ncbi-disease-test/f1"] == want["ncbi-disease-test"]["metrics"]["f1"]
    assert got["eval/ncbi-disease-test/lenient_f1"] == want["ncbi-disease-test"]["metrics"]["lenient"]["f1"]
    assert got["eval/pubmedqa-test/accuracy"] == want["pubmedqa-test"]["metrics"]["accuracy"]
    assert json.loads((step_dir / "results.json").read_text())["sets"] == want
    answers = [json.loads(line)["answer"] for line in (out / "generations.jsonl").read_text().splitlines()]
    if early_stop:  # the run really had ranks ending at different tokens
        assert len(answers[1]) < min(len(answers[i]) for i in (0, 2, 4)), answers
