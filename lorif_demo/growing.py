"""The full demo answers early: it indexes a spread over every play first (stage 0: the quick
subset — every 15th speech and the speeches the demo queries quote), publishes and serves it,
then adds the other speeches in stages of ``STAGE_ROWS``, each published as it finishes (the
server follows), and at the end recomputes the curvature over every row. Until then the basis
is stage 0's (``curvature_rows`` says how many rows it covers); the finished index answers as a
one-shot build of the same rows in the same order does.

The stages are files in ``WORKDIR/shakespeare.stages/``, written once from the corpus; the
index's ``growing.json`` says the target. An interrupted stage resumes (``lorif index add``
resumes its own partial shards); ``python -m lorif_demo.growing INDEX STAGES`` is the grower
``lorif demo`` starts beside the server, at the lowest CPU priority.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

from indexer.storage.manifest import GROWING  # {"target_rows": M}

STAGE_ROWS = 4096


def write_stages(rows: list[dict], first: set[int], out: Path) -> list[Path]:
    """``rows`` (the corpus) as stage files: stage 0 the rows whose index is in ``first``,
    then the others in order, ``STAGE_ROWS`` a stage; written atomically, once."""
    out.mkdir(parents=True, exist_ok=True)
    done = sorted(out.glob("stage-*.jsonl"))
    if done and (out / "complete").exists():
        return done
    rest = [r for i, r in enumerate(rows) if i not in first]
    stages = [[r for i, r in enumerate(rows) if i in first]]
    stages += [rest[s : s + STAGE_ROWS] for s in range(0, len(rest), STAGE_ROWS)]
    paths = []
    for k, stage in enumerate(stages):
        path = out / f"stage-{k:03d}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in stage))
        tmp.replace(path)
        paths.append(path)
    (out / "complete").write_text(f"{len(rows)}\n")
    return paths


def stage_sizes(stages: list[Path]) -> list[int]:
    return [sum(1 for _ in p.open(encoding="utf-8")) for p in stages]


def mark_growing(index: Path, stages: list[Path]) -> None:
    """Tell readers (``lorif index info``, ``GET /v1/index``, the page) the target."""
    (index / GROWING).write_text(json.dumps({"target_rows": sum(stage_sizes(stages))}))


def grow(
    index: Path, stages: list[Path], progress: bool = True, bars: bool = True, device: str = "auto"
) -> int:
    """Add every stage the index does not hold yet (each published as it finishes), then
    refresh the curvature over every row if it covers fewer; returns the rows added.
    ``progress``: a line per publish; ``bars``: the builds' progress bars too."""
    from indexer import Index
    from indexer.build import add_examples, refresh_curvature

    with Index(index) as opened:
        n, covered = len(opened), opened.curvature_rows
    ends = list(itertools.accumulate(stage_sizes(stages)))
    if n not in ends:
        raise SystemExit(f"{index} holds {n} rows, not a whole number of the demo's stages")
    added = 0
    for stage, end in zip(stages[ends.index(n) + 1 :], ends[ends.index(n) + 1 :], strict=True):
        add_examples(index, str(stage), device=device, progress=bars, curvature=False)
        added += end - n
        n = end
        if progress:
            print(f"published {n:,} of {ends[-1]:,} speeches", file=sys.stderr, flush=True)
    if covered < n:
        refresh_curvature(index, device=device, progress=bars)
        if progress:
            print(f"curvature refreshed over all {n:,} speeches", file=sys.stderr, flush=True)
    (index / GROWING).unlink(missing_ok=True)
    return added


if __name__ == "__main__":  # the grower lorif demo starts beside the server
    os.nice(19)  # queries first: the server's scorer runs at +10
    try:
        directory = Path(sys.argv[2])
        grow(Path(sys.argv[1]), sorted(directory.glob("stage-*.jsonl")), bars=False)
    except KeyboardInterrupt:  # Ctrl+C: the next `lorif demo` resumes
        sys.exit(130)
