"""LDS of the three preconditioners through the product's own path, on both settings.

    python -m benchmarks.lds.preconditioners digits --json benchmarks/lds/results/preconditioners_digits.json
    python -m benchmarks.lds.preconditioners shakespeare --json benchmarks/lds/results/preconditioners_shakespeare.json

Each row is an index built with ``build_index`` (``--curvature lowrank | kfac | ekfac``, a
sharded directory) and scored by ``QueryEngine.score`` against the committed ground truth: at
the build's damping (alpha = 0.1), at alpha = 0.01 chosen at query time, and unit-normalised.
The stored rows (bytes per example) do not depend on the preconditioner.
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from .harness import Report, read_ground_truth

SCORINGS = [("α=0.1", {}), ("α=0.01", {"damping": 0.01}), ("unit α=0.1", {"normalize": "unit"})]


def run(setting: str, grid: list[tuple[int, int]], kinds: list[str], report: Report) -> None:
    from indexer.build import build_index
    from indexer.config import BuildConfig, CurvatureConfig
    from indexer.models.featurizer import Featurizer
    from indexer.query import QueryEngine
    from indexer.storage.reader import Index

    model, task, train_ex, query_ex, extra = _setting(setting)
    with tempfile.TemporaryDirectory() as tmp:
        for f, c in grid:
            for kind in kinds:
                cfg = BuildConfig(
                    model=setting,
                    data="memory",
                    output=str(Path(tmp) / f"{kind}-f{f}-c{c}"),
                    proj_factor=f,
                    rank=c,
                    curvature=CurvatureConfig(kind=kind, rank=256),
                    seed=0,
                    overwrite=True,
                    **extra,
                )
                t = time.perf_counter()
                build_index(
                    cfg,
                    featurizer=Featurizer.create(model, task, proj_factor=f, seed=0),
                    examples=train_ex,
                    model_info={"name": setting},
                    task_info={"kind": setting},
                    progress=False,
                )
                build_s = time.perf_counter() - t
                with Index(cfg.output) as index:
                    engine = QueryEngine.attach(index, model, task)
                    nbytes = index.bytes_per_example()[0]
                    for label, options in SCORINGS:
                        scores = engine.score(query_ex, k=1, keep_scores=True, **options).scores
                        method = {"lowrank": "LoRIF", "kfac": "LoRIF K-FAC"}.get(
                            kind, "LoRIF EK-FAC"
                        )
                        report.add(method, f"f={f} c={c} {label}", scores, nbytes, build_s)


def _setting(setting: str):
    """(model, task, training examples, queries, build settings) of an LDS setting."""
    if setting == "digits":
        from indexer.data import Example
        from indexer.models.tasks import ClassificationTask

        from .digits import load, train

        x, y, xq, yq = load()
        model = train(x, y, seed=0)

        def examples(xs, ys, name):
            return [
                Example(completion=f"{name} {i}", inputs=xs[i], meta={"label": int(ys[i])})
                for i in range(len(ys))
            ]

        return (
            model,
            ClassificationTask(),
            examples(x, y, "train"),
            examples(xq, yq, "query"),
            {"batch_size": 250},
        )
    from .shakespeare import MAX_TOKENS, trained_setting

    model, task, train_ex, query_ex = trained_setting()
    return model, task, train_ex, query_ex, {"batch_size": 32, "max_tokens": MAX_TOKENS}


GRIDS = {
    "digits": [(1, 1), (2, 1), (4, 1)],
    "shakespeare": [(1, 4), (1, 2), (1, 1), (4, 4)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("setting", choices=sorted(GRIDS))
    ap.add_argument("--kinds", default="lowrank,kfac,ekfac")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.setting == "digits":
        from .digits import GROUND_TRUTH
    else:
        from .shakespeare import GROUND_TRUTH
    subsets, losses, _ = read_ground_truth(GROUND_TRUTH)
    report = Report(subsets, losses)
    run(args.setting, GRIDS[args.setting], args.kinds.split(","), report)
    if args.json:
        args.json.write_text(json.dumps(report.rows, indent=2))


if __name__ == "__main__":
    main()
