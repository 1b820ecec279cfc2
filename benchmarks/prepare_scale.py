"""How fast ``prepare`` builds and re-finds 200,000 records with the paper's length profile.

Not a test: run it by hand and read the numbers.

    python benchmarks/prepare_scale.py                    # 200,000 records, tokenizer vocab 1000
    python benchmarks/prepare_scale.py --records 50000 --vocab 32000

The real corpora in ../shared/data are scaled up into native source files
(every copy made unique with a short marker, so deduplication stays on and
finds nothing), in the paper's mix of sample kinds (Rohanian et al. 2024:
about 200k samples, most of them long free-text QA, then NER, short-answer
RE/NLI/classification and PubMedQA). Our split, an assumption stated here:

    NER (CoNLL, NCBI + BC5CDR-chem sentences)             30%
    short-answer relation (GAD TSV, marked sentences)      15%
    PubMedQA (ori_pqal.json, context + question)            5%
    free-text QA (JSON Lines: question + context -> the
      abstract's long answer, like ChatDoctor/PMC-LLaMA)   50%

The tokenizer is a byte-fallback BPE trained once on the shared corpora
(excluded from the timings, reported apart). Then ``prepare`` runs on an
empty cache (cold: read, dedup, draw instructions, render, tokenize, save
Arrow, stats, histogram) and again (cached: fingerprint the sources, load the
Arrow files). Targets on a 2-core machine: cold < 60 s, cached < 5 s.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SHARE = {"ner": 0.30, "relation": 0.15, "pubmedqa": 0.05, "open_qa": 0.50}


def _sentences() -> list[list[tuple[str, str]]]:
    out = []
    for corpus in ("ncbi_disease", "bc5cdr_chem"):
        for split in ("train", "devel", "test"):
            for block in (SHARED / corpus / f"{split}.tsv").read_text().split("\n\n"):
                rows = [tuple(line.split("\t")) for line in block.splitlines() if line.strip()]
                if rows:
                    out.append(rows)
    return out


def write_corpora(work: Path, n: int) -> dict[str, int]:
    """Native-format source files holding `n` records in the SHARE proportions."""
    rng = random.Random(0)
    sents = _sentences()
    pqal = json.loads((SHARED / "pubmedqa" / "ori_pqal.json").read_text())
    items = list(pqal.values())
    counts = {k: round(v * n) for k, v in SHARE.items()}
    counts["open_qa"] = n - sum(v for k, v in counts.items() if k != "open_qa")

    with open(work / "ner.tsv", "w") as fh:
        for i in range(counts["ner"]):
            rows = sents[i % len(sents)]
            copy = i // len(sents)
            body = rows if copy == 0 else rows[:-1] + [(f"({copy})", "O")] + rows[-1:]
            fh.write("".join(f"{tok}\t{tag}\n" for tok, tag in body) + "\n")

    with open(work / "relation.tsv", "w") as fh:
        for i in range(counts["relation"]):
            toks = [tok for tok, _ in sents[(i * 7) % len(sents)]]
            a, b = sorted(rng.sample(range(len(toks)), 2)) if len(toks) > 1 else (0, 0)
            toks[a], toks[b] = "@GENE$", "@DISEASE$"
            copy = i // len(sents)
            fh.write(" ".join(toks) + (f" ({copy})" if copy else "") + f"\t{i % 2}\n")

    qa = {}
    for i in range(counts["pubmedqa"]):
        item = dict(items[i % len(items)])
        copy = i // len(items)
        if copy:
            item["QUESTION"] = f"{item['QUESTION']} ({copy})"
        qa[str(10_000_000 + i)] = item
    (work / "pubmedqa").mkdir(exist_ok=True)
    (work / "pubmedqa" / "ori_pqal.json").write_text(json.dumps(qa))

    with open(work / "open_qa.jsonl", "w") as fh:
        for i in range(counts["open_qa"]):
            item = items[(i * 3) % len(items)]
            copy = i // len(items)
            question = item["QUESTION"] + (f" ({copy})" if copy else "")
            fh.write(json.dumps({
                "instruction": "If you are a doctor, please answer the medical question based on the "
                               "description.",
                "input": f"{question} {item['CONTEXTS'][0]}",
                "output": item["LONG_ANSWER"], "task": "open-qa"}) + "\n")
    return counts


def train_tokenizer(work: Path, vocab: int) -> Path:
    from medtune.data.tokenizer import train_sentencepiece

    sents = _sentences()
    pqal = json.loads((SHARED / "pubmedqa" / "ori_pqal.json").read_text()).values()
    texts = [" ".join(t for t, _ in s) for s in sents]
    texts += [" ".join(v["CONTEXTS"]) + " " + v["QUESTION"] + " " + v["LONG_ANSWER"] for v in pqal]
    texts += ["### Instruction: x\n ### Input: y\n ### Output: z : O"]
    out = work / f"tokenizer-{vocab}"
    if not out.exists():  # a kept --work folder reuses its tokenizer
        train_sentencepiece(texts, out, vocab)
    return out


def recipe(work: Path, tokenizer: Path, cache: Path):
    from medtune import config

    tree = {
        "model": {"config": {"model_type": "llama", "vocab_size": 32000}, "tokenizer": str(tokenizer)},
        "data": {
            "sources": [
                {"name": "ner", "path": str(work / "ner.tsv"), "format": "conll", "instructions": "ner"},
                {"name": "relation", "path": str(work / "relation.tsv"), "format": "gad"},
                {"name": "pubmedqa", "path": str(work / "pubmedqa"), "format": "pubmedqa", "split": "all"},
                {"name": "open-qa", "path": str(work / "open_qa.jsonl"), "format": "jsonl"},
            ],
            "template": "paper", "max_tokens": 2048, "cache_dir": str(cache)},
    }
    return config.validate(tree, {}, "prepare_scale")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--vocab", type=int, default=1000, help="vocabulary of the BPE tokenizer trained "
                   "for the run (1000: the tiny test tokenizer, many tokens per word: the slow case)")
    p.add_argument("--work", help="keep the scaled corpora and cache here (default: a temp dir)")
    args = p.parse_args(argv)
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: the benchmark scales up the shared corpora", file=sys.stderr)
        return 2
    import datasets  # noqa: F401  (library start-up is not part of the data stage)

    from medtune.data import mixture
    from medtune.data.prepare import prepare

    work = Path(args.work or tempfile.mkdtemp(prefix="medtune-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    counts = write_corpora(work, args.records)
    print(f"scaled corpora: {counts} -> {work} ({time.perf_counter() - t:.1f}s, not timed below)")
    t = time.perf_counter()
    tok = train_tokenizer(work, args.vocab)
    print(f"tokenizer: BPE vocab {args.vocab} trained in {time.perf_counter() - t:.1f}s (not timed below)")
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    r = recipe(work, tok, cache)

    t = time.perf_counter()
    samples, _ = mixture.build(r.data, "prepare_scale", progress=False)
    read_s = time.perf_counter() - t

    t = time.perf_counter()
    cold = prepare(r, "prepare_scale", log=print)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    hit = prepare(r, "prepare_scale", log=print)
    hit_s = time.perf_counter() - t
    assert not cold.cache_hit and hit.cache_hit and len(hit.dataset) == len(cold.dataset)

    s = cold.stats
    n = s["samples"]
    read = sum(st["records"] for st in s["sources"].values())
    dups = sum(st["duplicates"] for st in s["sources"].values())
    print(f"\n{read} records read, {dups} exact duplicates removed (repeats inside the corpora), "
          f"{n} samples, {s['tokens']} tokens, {s['tokens'] / n:.0f} tokens/sample; mean length per "
          "task: " + ", ".join(f"{k} {v['mean_length']:.0f}" for k, v in s["tasks"].items()))
    print(f"read + mixture alone: {read_s:6.2f}s  ({len(samples) / read_s:10,.0f} records/s)")
    print(f"cold prepare:         {cold_s:6.2f}s  ({n / cold_s:10,.0f} records/s)   target < 60 s: "
          f"{'met' if cold_s < 60 else 'MISSED'}")
    print(f"cached prepare:       {hit_s:6.2f}s  ({n / hit_s:10,.0f} records/s)   target <  5 s: "
          f"{'met' if hit_s < 5 else 'MISSED'}")
    print(f"cold / cached: {cold_s / hit_s:.0f}x")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
