"""LDS of the three preconditioners and the two truncations through the product's own path.

    python -m benchmarks.lds.preconditioners digits --json benchmarks/lds/results/preconditioners_digits.json
    python -m benchmarks.lds.preconditioners shakespeare --json benchmarks/lds/results/preconditioners_shakespeare.json
    python -m benchmarks.lds.preconditioners shakespeare --truncation kfac --truncation-damping 0.1 --json benchmarks/lds/results/truncation_shakespeare.json
    python -m benchmarks.lds.preconditioners milton --truncation plain,kfac --truncation-damping 0.1 --json benchmarks/lds/results/preconditioners_milton.json
    python -m benchmarks.lds.preconditioners shakespeare --kinds ekfac,lowrank --grid 1:4,1:B19456,2:8,2:B19456,1:2,1:B9728 --json benchmarks/lds/results/budget_shakespeare.json

Each row is an index built with ``build_index`` (``--curvature lowrank | kfac | ekfac``, a
sharded directory) and scored by ``QueryEngine.score`` against the committed ground truth: at
the build's damping (alpha = 0.1), at alpha = 0.01 chosen at query time, and unit-normalised.
The stored rows (bytes per example) do not depend on the preconditioner; ``--truncation kfac``
stores other rank-c factors of the same gradients (optimal in the K-FAC-whitened norm). A grid
entry ``f:B<bytes>`` builds with ``--bytes-per-example <bytes>`` (c chosen per layer) instead of
one c, to compare with the uniform (f, c) of the same bytes side by side.
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import product
from pathlib import Path

from .harness import Report, read_ground_truth

SCORINGS = [("α=0.1", {}), ("α=0.01", {"damping": 0.01}), ("unit α=0.1", {"normalize": "unit"})]


def run(
    setting: str,
    grid: list[tuple[int, int, int]],
    kinds: list[str],
    report: Report,
    truncations: tuple[str, ...] = ("plain",),
    truncation_damping: float = 1.0,
) -> None:
    from indexer.build import build_index
    from indexer.config import BuildConfig, CurvatureConfig
    from indexer.models.featurizer import Featurizer
    from indexer.query import QueryEngine
    from indexer.storage.reader import Index

    model, task, train_ex, query_ex, extra = _setting(setting)
    with tempfile.TemporaryDirectory() as tmp:
        for (f, c, budget), kind, truncation in product(grid, kinds, truncations):
            cfg = BuildConfig(
                model=setting,
                data="memory",
                output=str(Path(tmp) / f"{kind}-f{f}-c{c}-B{budget}-{truncation}"),
                proj_factor=f,
                rank=max(c, 1),
                bytes_per_example=budget,
                truncation=truncation,
                truncation_damping=truncation_damping,
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
            method = {"lowrank": "LoRIF", "kfac": "LoRIF K-FAC"}.get(kind, "LoRIF EK-FAC")
            trunc = "" if truncation == "plain" else f" trunc={truncation} δ={truncation_damping:g}"
            with Index(cfg.output) as index:
                engine = QueryEngine.attach(index, model, task)
                nbytes = index.bytes_per_example()[0]
                ranks = index.layout.ranks
                shape = f"c={c}" if not budget else f"B={budget} c={'/'.join(map(str, ranks))}"
                for label, options in SCORINGS:
                    scores = engine.score(query_ex, k=1, keep_scores=True, **options).scores
                    report.add(method, f"f={f} {shape}{trunc} {label}", scores, nbytes, build_s)


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
    lm = LM_SETTINGS[setting]()
    model, task, train_ex, query_ex = lm.trained()
    return model, task, train_ex, query_ex, {"batch_size": 32, "max_tokens": lm.max_tokens}


def _shakespeare():
    from .shakespeare import SETTING

    return SETTING


def _milton():
    from .milton import SETTING

    return SETTING


LM_SETTINGS = {"shakespeare": _shakespeare, "milton": _milton}


GRIDS = {
    "digits": [(1, 1), (2, 1), (4, 1)],
    "shakespeare": [(1, 4), (1, 2), (1, 1), (4, 4)],
    "milton": [(1, 4), (1, 2), (1, 1), (4, 4)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("setting", choices=sorted(GRIDS))
    ap.add_argument("--kinds", default="lowrank,kfac,ekfac")
    ap.add_argument("--truncation", default="plain", help="comma-separated: plain,kfac")
    ap.add_argument("--truncation-damping", type=float, default=1.0)
    ap.add_argument(
        "--grid",
        default="",
        help="f:c pairs, e.g. 1:4,4:4, or f:B<bytes per example> for a storage budget "
        "(default: the setting's)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.setting == "digits":
        from .digits import GROUND_TRUTH
    else:
        GROUND_TRUTH = LM_SETTINGS[args.setting]().ground_truth
    subsets, losses, _ = read_ground_truth(GROUND_TRUTH)
    report = Report(subsets, losses)
    grid = [_grid_entry(p) for p in args.grid.split(",") if p] or [
        (f, c, 0) for f, c in GRIDS[args.setting]
    ]
    truncations = tuple(args.truncation.split(","))
    kinds = args.kinds.split(",")
    run(args.setting, grid, kinds, report, truncations, args.truncation_damping)  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps(report.rows, indent=2))


def _grid_entry(text: str) -> tuple[int, int, int]:
    """``f:c`` -> (f, c, 0); ``f:B<bytes>`` -> (f, 0, bytes)."""
    f, rest = text.split(":")
    if rest.startswith("B"):
        return int(f), 0, int(rest[1:])
    return int(f), int(rest), 0


if __name__ == "__main__":
    main()
