"""The full demo's growing index: stage 0 published first, the rest added stage by stage with
the stage-0 basis, the curvature refreshed at the end — then it answers as a one-shot build of
the same rows in the same order does."""

from __future__ import annotations

import json

import numpy as np

from indexer import Example, Index, QueryEngine, build_index
from lorif_demo import growing
from tests.conftest import small_config
from tests.helpers import write_jsonl

QUERIES = [
    Example(completion="the king loves the sea."),
    Example(prompt="storm ", completion="night."),
]


def scores(path):
    engine = QueryEngine.open(path, device="cpu")
    try:
        r = engine.score(QUERIES, k=10, keep_scores=True)
        return r.scores, r.proponent_ids
    finally:
        engine.close()


def test_a_grown_index_answers_as_a_one_shot_build(model_dirs, data_jsonl, tmp_path, monkeypatch):
    monkeypatch.setattr(growing, "STAGE_ROWS", 16)
    rows = [json.loads(line) for line in data_jsonl.read_text().splitlines()]
    stages = growing.write_stages(rows, {i for i in range(60) if i % 15 == 0}, tmp_path / "st")
    assert growing.stage_sizes(stages) == [4, 16, 16, 16, 8]
    index = build_index(small_config(model_dirs, stages[0], tmp_path / "grown", 16), progress=False)
    growing.mark_growing(index, stages)
    with Index(index) as first:
        summary = first.summary()
        assert summary["n_examples"] == 4 and summary["target_rows"] == 60
    assert growing.grow(index, stages, progress=False, bars=False) == 56
    assert growing.grow(index, stages, progress=False, bars=False) == 0  # nothing left: resumes
    all_rows = [json.loads(line) for p in stages for line in p.read_text().splitlines()]
    one_shot = build_index(
        small_config(
            model_dirs, write_jsonl(tmp_path / "all.jsonl", all_rows), tmp_path / "one", 16
        ),
        progress=False,
    )
    with Index(index) as grown, Index(one_shot) as built:
        assert len(grown) == len(built) == 60 and grown.curvature_rows == 60
        assert grown.summary()["target_rows"] is None and not (index / growing.GROWING).exists()
        assert grown.column("completion") == built.column("completion")
        assert grown.fingerprint != built.fingerprint  # other shard boundaries, same rows
    got, want = scores(index), scores(one_shot)
    # as test_add_equals_building_everything: the curvature's sums run over other shard blocks
    scale = float(np.abs(want[0]).max())
    np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=2e-4 * scale)
    assert (got[1] == want[1]).all()
