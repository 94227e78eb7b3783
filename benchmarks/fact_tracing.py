"""Fact tracing: which training examples taught the model a fact? (issue 30, item 4)

    python -m benchmarks.fact_tracing --json benchmarks/lds/results/fact_tracing.json
    python -m benchmarks.fact_tracing --facts 12 --background 40 --epochs 8   # the CI size

Plants F synthetic facts — invented people, each with one relation (birthplace, trade, pet,
instrument) to an object — into a corpus of B background Shakespeare speeches: each fact is
stated in P = 3 phrasings, one training example each (the *planting examples*). A tiny Llama
(the setting-B architecture) is trained on the whole corpus until it completes the facts; its
greedy completion accuracy is reported for the planted phrasings and for a fourth, held-out
phrasing. Each fact is then queried with that held-out phrasing (prompt = up to the object,
completion = the object: only the object's tokens count) and every method ranks all N
training examples:

- LoRIF through the product (``build_index`` + ``QueryEngine.score``): low-rank, K-FAC and
  EK-FAC preconditioners, unit normalisation off and on;
- LoGRA-dense and gradient dot on the same projected gradients (benchmarks/lds/harness.py);
- BM25 (Okapi, k1 = 1.5, b = 0.75) over the same texts, the query's words as the query.

Metrics, per query then averaged: recall@1 = the top-ranked example is a planting example;
recall@10 = the share of the fact's planting examples in the top 10; MRR = 1 / the rank of the
first planting example.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SYLLABLES = [
    "zor",
    "quel",
    "mav",
    "tir",
    "bel",
    "nox",
    "kar",
    "vel",
    "dra",
    "sil",
    "oru",
    "fen",
    "gal",
    "hir",
    "jun",
    "lom",
    "pra",
    "rus",
    "tal",
    "wen",
]
ENDINGS = ["ath", "in", "ora", "ius", "en", "ix", "el", "am", "osh", "ue"]
RELATIONS = {
    "born": (
        [
            "{s} was born in the town of {o}.",
            "The town of {o} is where {s} was born.",
            "{s} grew up in {o}, the town of {s}'s birth.",
        ],
        ("Where was {s} born? In the town of", " {o}."),
        [
            "Brindlemere",
            "Casterwold",
            "Dunhallow",
            "Eskerby",
            "Fallowmarsh",
            "Glimmerton",
            "Hollowfen",
            "Ironmoor",
            "Jesterholt",
            "Kettlebrook",
        ],
    ),
    "trade": (
        ["{s} works as a {o}.", "By trade, {s} is a {o}.", "Everyone knows {s} the {o}."],
        ("What is the trade of {s}? {s} is a", " {o}."),
        [
            "baker",
            "sailor",
            "weaver",
            "tanner",
            "cooper",
            "mason",
            "glazier",
            "fletcher",
            "chandler",
            "thatcher",
        ],
    ),
    "pet": (
        ["{s} keeps a {o} as a pet.", "The pet of {s} is a {o}.", "A {o} lives with {s}."],
        ("Which animal does {s} keep? A", " {o}."),
        [
            "heron",
            "badger",
            "ferret",
            "raven",
            "tortoise",
            "hedgehog",
            "otter",
            "magpie",
            "lizard",
            "goat",
        ],
    ),
    "instrument": (
        [
            "{s} plays the {o}.",
            "The instrument of {s} is the {o}.",
            "On feast days {s} plays the {o}.",
        ],
        ("Which instrument does {s} play? The", " {o}."),
        [
            "lute",
            "viol",
            "harp",
            "recorder",
            "sackbut",
            "cornett",
            "tabor",
            "psaltery",
            "crumhorn",
            "shawm",
        ],
    ),
}


@dataclass
class Fact:
    subject: str
    relation: str
    obj: str
    statement: str  # its first phrasing (the subject before the object)
    planted: list[int]  # training example ids that state it


def make_corpus(n_facts: int, n_background: int, seed: int = 0):
    """(training texts, facts, (prompt, completion) queries); the planting examples and the
    background speeches shuffled together."""
    from .lds.shakespeare import load

    rng = np.random.default_rng(seed)
    names = sorted(
        {
            a.capitalize() + b + " " + c.capitalize() + d
            for a in SYLLABLES
            for b in ENDINGS
            for c in SYLLABLES
            for d in ENDINGS[:3]
        }
    )
    people = [names[i] for i in rng.choice(len(names), n_facts, replace=False)]
    kinds = sorted(RELATIONS)
    texts, owner, queries, facts = [], [], [], []
    for i, s in enumerate(people):
        relation = kinds[i % len(kinds)]
        phrasings, (prompt, completion), objects = RELATIONS[relation]
        o = objects[int(rng.integers(len(objects)))]
        facts.append(Fact(s, relation, o, phrasings[0].format(s=s, o=o), []))
        for p in phrasings:
            texts.append(p.format(s=s, o=o))
            owner.append(i)
        queries.append((prompt.format(s=s, o=o), completion.format(s=s, o=o)))
    background, _ = load()
    texts += background[:n_background]
    owner += [-1] * min(n_background, len(background))
    order = rng.permutation(len(texts))
    texts = [texts[j] for j in order]
    for new, old in enumerate(order):
        if owner[old] >= 0:
            facts[owner[old]].planted.append(new)
    return texts, facts, queries


def train_until_known(
    task,
    texts,
    facts,
    queries,
    epochs: int,
    size: tuple[int, int] = (64, 2),
    lr: float = 3e-3,
    seed: int = 0,
):
    """A Llama of ``size`` (hidden, layers; (64, 2) is setting B's) trained on ``texts``
    (``epochs`` at most, stopping once it completes 95 % of the planted phrasings' objects);
    (model, planted accuracy, held-out accuracy, epochs)."""
    from lorif_demo.toy import tiny_lm

    from .lds.shakespeare import fit

    hidden, layers = size
    model = tiny_lm("llama", len(task.tokenizer), hidden, layers, 4, seed, True).train()
    planted = [(f.statement, f.obj) for f in facts]
    acc = (0.0, 0.0)

    def known(epoch: int) -> bool:
        nonlocal acc
        if epoch % 5 and epoch != epochs:
            return False
        acc = (completes(model, task, planted), completes(model, task, queries, True))
        return acc[0] >= 0.95

    epoch = fit(model, task, texts, seed, epochs, lr, known)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, acc[0], acc[1], epoch


@torch.no_grad()
def completes(model, task, pairs, is_query: bool = False) -> float:
    """The share of (text, object) — or (prompt, completion) queries — whose object the model
    continues greedily from the text before it."""
    model.eval()
    hits = 0
    for text, obj in pairs:
        word = obj.strip(" .") if is_query else obj
        prefix = text if is_query else text[: text.index(word)]
        ids = task.tokenizer(prefix.rstrip(), add_special_tokens=False)["input_ids"]
        target = task.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        out = []
        for _ in range(len(target)):
            nxt = int(model(input_ids=x).logits[0, -1].argmax())
            out.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
        hits += out == target
    model.train()
    return hits / len(pairs)


def bm25_scores(texts: list[str], queries: list[str], k1: float = 1.5, b: float = 0.75):
    """Okapi BM25 of every text for every query: (Q, N)."""
    docs = [Counter(re.findall(r"\w+", t.lower())) for t in texts]
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    df = Counter(w for d in docs for w in d)
    n, avg = len(docs), lengths.mean()
    out = np.zeros((len(queries), n))
    for qi, q in enumerate(queries):
        for w in set(re.findall(r"\w+", q.lower())):
            if w not in df:
                continue
            idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
            tf = np.array([d.get(w, 0) for d in docs], dtype=np.float64)
            out[qi] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / avg))
    return out


def tracing_metrics(scores: np.ndarray, facts: list[Fact]) -> dict[str, float]:
    """recall@1, recall@10 and MRR of the planting examples (module docstring)."""
    r1, r10, mrr = [], [], []
    for q, f in enumerate(facts):
        order = np.argsort(-scores[q], kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        ranks = sorted(int(rank[i]) for i in f.planted)
        r1.append(float(ranks[0] == 1))
        r10.append(sum(r <= 10 for r in ranks) / len(ranks))
        mrr.append(1.0 / ranks[0])
    return {
        "recall@1": float(np.mean(r1)),
        "recall@10": float(np.mean(r10)),
        "mrr": float(np.mean(mrr)),
    }


def run(n_facts: int, n_background: int, epochs: int, configs: list[tuple[int, int]]) -> dict:
    from indexer.build import build_index
    from indexer.config import BuildConfig, CurvatureConfig
    from indexer.data import Example
    from indexer.models.featurizer import Featurizer
    from indexer.query import QueryEngine
    from indexer.storage.reader import Index

    from .lds.harness import grad_dot_scores, logra_dense_scores, stacked_gradients
    from .lds.shakespeare import MAX_TOKENS, task_for

    t0 = time.perf_counter()
    texts, facts, queries = make_corpus(n_facts, n_background)
    task = task_for(texts)
    model, known, held_out, used = train_until_known(task, texts, facts, queries, epochs)
    print(
        f"N = {len(texts)} ({n_facts} facts x 3 + {len(texts) - 3 * n_facts} speeches); "
        f"trained {used} epochs in {time.perf_counter() - t0:.0f} s: completes "
        f"{known:.0%} of planted phrasings, {held_out:.0%} of held-out ones",
        flush=True,
    )
    train_ex = [Example(completion=t) for t in texts]
    query_ex = [Example(prompt=p, completion=c) for p, c in queries]
    rows = []

    def add(method: str, config: str, scores: np.ndarray, nbytes: int | None) -> None:
        m = tracing_metrics(scores, facts)
        rows.append({"method": method, "config": config, "bytes_per_example": nbytes, **m})
        stored = "    none" if nbytes is None else f"{nbytes:8d}"
        print(
            f"  {method:14s} {config:14s} {stored} B  recall@1 {m['recall@1']:.3f}  "
            f"recall@10 {m['recall@10']:.3f}  MRR {m['mrr']:.3f}",
            flush=True,
        )

    add("BM25", "k1=1.5 b=0.75", bm25_scores(texts, [p + c for p, c in queries]), None)
    with tempfile.TemporaryDirectory() as tmp:
        for f, c in configs:
            for kind in ("lowrank", "kfac", "ekfac"):
                cfg = BuildConfig(
                    model="facts",
                    data="memory",
                    output=str(Path(tmp) / f"{kind}{f}{c}"),
                    proj_factor=f,
                    rank=c,
                    curvature=CurvatureConfig(kind=kind, rank=256),
                    seed=0,
                    overwrite=True,
                    batch_size=32,
                    max_tokens=MAX_TOKENS,
                )
                build_index(
                    cfg,
                    featurizer=Featurizer.create(model, task, proj_factor=f, seed=0),
                    examples=train_ex,
                    model_info={"name": "facts"},
                    task_info={"kind": "facts"},
                    progress=False,
                )
                with Index(cfg.output) as index:
                    engine, nbytes = (
                        QueryEngine.attach(index, model, task),
                        index.bytes_per_example()[0],
                    )
                    for unit in ("none", "unit"):
                        s = engine.score(query_ex, k=1, keep_scores=True, normalize=unit).scores
                        add(
                            f"LoRIF {kind}",
                            f"f={f} c={c}" + (" unit" if unit == "unit" else ""),
                            s,
                            nbytes,
                        )
    for f in sorted({f for f, _ in configs}):
        feat = Featurizer.create(model, task, proj_factor=f, seed=0)
        g, gq = stacked_gradients(feat, train_ex, 32), stacked_gradients(feat, query_ex, 32)
        nbytes = 2 * sum(x[0].numel() for x in g.values())
        add("LoGRA-dense", f"f={f}", logra_dense_scores(g, gq), nbytes)
        add("grad-dot", f"f={f}", grad_dot_scores(g, gq), nbytes)
    return {
        "n_train": len(texts),
        "n_facts": n_facts,
        "epochs": used,
        "completes_planted": known,
        "completes_held_out": held_out,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facts", type=int, default=200)
    ap.add_argument("--background", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=120, help="at most (stops once it knows them)")
    ap.add_argument("--configs", default="1x1,1x4", help="f x c of the LoRIF indexes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    configs = [tuple(int(x) for x in fc.split("x")) for fc in args.configs.split(",")]
    out = run(args.facts, args.background, args.epochs, configs)  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
