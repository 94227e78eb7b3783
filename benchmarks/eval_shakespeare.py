"""Attribution sanity on real data: self-retrieval and topical coherence on the demo index.

- Self-retrieval: 200 random *training* speeches used as queries; recall@1 / recall@10 of the
  speech itself (and, separately, of any speech with identical text: short lines such as
  "My lord?" occur many times).
- Topical coherence: 200 *held-out* speeches as queries; share of the top-10 proponents (the
  query's own row excluded) that come from the query's play, against the chance rate
  (n_play - 1) / (N - 1) averaged over the same queries.

    python benchmarks/eval_shakespeare.py [--index .lorif-demo/shakespeare] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np

from indexer.query import QueryEngine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=".lorif-demo/shakespeare")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--damping", type=float, default=None, help="alpha (default: the build's)")
    ap.add_argument("--normalize", default="none", choices=["none", "unit"])
    args = ap.parse_args()

    engine = QueryEngine.open(args.index, device="auto")
    index = engine.index
    n = len(index)
    metas = [json.loads(m) for m in index.column("meta")]
    texts = [p + c for p, c in zip(index.column("prompt"), index.column("completion"), strict=True)]
    plays = [m["play"] for m in metas]
    rng = np.random.default_rng(args.seed)
    train_ids = [i for i, m in enumerate(metas) if m.get("split", "train") == "train"]
    val_ids = [i for i, m in enumerate(metas) if m.get("split") == "val"]
    self_q = rng.choice(train_ids, size=min(args.queries, len(train_ids)), replace=False)
    val_q = rng.choice(val_ids, size=min(args.queries, len(val_ids)), replace=False)

    def top_ids(ids: np.ndarray, k: int) -> np.ndarray:
        out = []
        for s in range(0, len(ids), args.batch):
            chunk = ids[s : s + args.batch]
            res = engine.score(
                [index.example(int(i)) for i in chunk],
                k=k,
                keep_scores=False,
                damping=args.damping,
                normalize=args.normalize,
            )
            out.append(res.proponent_ids)
        return np.concatenate(out)

    t = time.perf_counter()
    top = top_ids(self_q, 10)
    r1 = float(np.mean(top[:, 0] == self_q))
    r10 = float(np.mean([q in row for q, row in zip(self_q, top, strict=False)]))
    r1_text = float(
        np.mean([texts[row[0]] == texts[q] for q, row in zip(self_q, top, strict=False)])
    )
    r10_text = float(
        np.mean(
            [any(texts[j] == texts[q] for j in row) for q, row in zip(self_q, top, strict=False)]
        )
    )
    misses = [int(q) for q, row in zip(self_q, top, strict=False) if q not in row]

    top_v = top_ids(val_q, 11)
    counts = Counter(plays)
    same, chance = [], []
    for q, row in zip(val_q, top_v, strict=False):
        row = [j for j in row if j != q][:10]
        same.append(np.mean([plays[j] == plays[q] for j in row]))
        chance.append((counts[plays[q]] - 1) / (n - 1))
    seconds = time.perf_counter() - t
    result = {
        "index": args.index,
        "curvature": index.curvature_kind,
        "damping": args.damping,
        "normalize": args.normalize,
        "n": n,
        "queries": int(len(self_q)),
        "self_recall_at_1": r1,
        "self_recall_at_10": r10,
        "self_recall_at_1_text": r1_text,
        "self_recall_at_10_text": r10_text,
        "self_miss_lengths": sorted(len(texts[q]) for q in misses),
        "heldout_queries": int(len(val_q)),
        "same_play_top10": float(np.mean(same)),
        "same_play_chance": float(np.mean(chance)),
        "seconds": round(seconds, 1),
    }
    engine.close()
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"index {args.index}: N={n}, {index.curvature_kind}, damping "
        f"{args.damping or 'of the build'}, normalize {args.normalize}"
    )
    print(
        f"self-retrieval ({len(self_q)} training speeches): recall@1 {r1:.3f}  "
        f"recall@10 {r10:.3f}   (identical text counted: {r1_text:.3f} / {r10_text:.3f})"
    )
    print(
        f"  misses@10: {len(misses)}, their lengths in characters: "
        f"{result['self_miss_lengths'][:20]}"
    )
    print(
        f"topical coherence ({len(val_q)} held-out speeches): same play in top-10 "
        f"{result['same_play_top10']:.3f} vs chance {result['same_play_chance']:.3f} "
        f"({result['same_play_top10'] / result['same_play_chance']:.1f}x)"
    )
    print(f"({seconds:.1f} s for {2 * len(self_q)} queries)")


if __name__ == "__main__":
    main()
