"""LDS setting B: a small Llama-architecture LM on a Shakespeare subset.

    python -m benchmarks.lds.shakespeare ground-truth   # retrain M subsets x S seeds (committed)
    python -m benchmarks.lds.shakespeare evaluate       # score every method against it

Data: N = 1,000 training speeches (80-400 characters, the corpus' train split, every k-th) and
Q = 50 held-out speeches (val split) as queries. Tokenizer: byte-level BPE (1,024) fitted on
the N training speeches. Model: Llama, hidden 64, 2 layers, 4 heads, tied embeddings; AdamW,
batch 32, 4 epochs over the (sub)set. Query loss = summed next-token loss of the speech.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .lm import LMSetting, fit

HERE = Path(__file__).resolve().parent
GROUND_TRUTH = HERE / "data" / "shakespeare_ground_truth.npz"
N_TRAIN, N_QUERY = 1000, 50


def load() -> tuple[list[str], list[str]]:
    from lorif_demo.corpora.shakespeare import load_speeches
    from lorif_demo.corpora.splits import split_of

    speeches = load_speeches(version=1)  # the committed ground truth was built from it
    ok = [(i, r["text"]) for i, r in enumerate(speeches) if 80 <= len(r["text"]) <= 400]
    train = [t for i, t in ok if split_of(i) == "train"]
    val = [t for i, t in ok if split_of(i) != "train"]
    return train[:: len(train) // N_TRAIN][:N_TRAIN], val[:: len(val) // N_QUERY][:N_QUERY]


SETTING = LMSetting("shakespeare-llama-tiny", load, GROUND_TRUTH)
MAX_TOKENS = SETTING.max_tokens
task_for = SETTING.task
trained_setting = SETTING.trained
__all__ = ["GROUND_TRUTH", "MAX_TOKENS", "SETTING", "fit", "load", "task_for", "trained_setting"]


def train(task, texts: list[str], seed: int) -> torch.nn.Module:
    """Setting B's model trained on ``texts`` (deterministic given texts and seed)."""
    return SETTING.train(task, texts, seed)


if __name__ == "__main__":
    from .lm_eval import main

    main(SETTING, __doc__.splitlines()[0])
