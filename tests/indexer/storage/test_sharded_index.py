"""The sharded index (format 2): same answers as one file, verification per shard, growth."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from indexer import ConfigError, Example, Index, IndexFormatError, QueryEngine, build_index
from indexer.config import BuildConfig, CurvatureConfig
from indexer.data import load_examples
from tests.helpers import write_jsonl

QUERIES = [
    Example(prompt="the king ", completion="loves the sea and the moon."),
    Example(completion="storm night crown fool gold."),
]


def config(model_dir, data, out, **kw) -> BuildConfig:
    return BuildConfig(
        model=str(model_dir),
        data=str(data),
        output=str(out),
        proj_factor=4,
        rank=2,
        curvature=CurvatureConfig(rank=16),
        batch_size=8,
        **kw,
    )


def scores(path, k=10):
    engine = QueryEngine.open(path, device="cpu")
    try:
        result = engine.score(QUERIES, k=k, keep_scores=True)
        return result, engine.index.summary(), engine.index.examples_at([0, 17, 59, 33])
    finally:
        engine.close()


@pytest.fixture(scope="module")
def single_and_sharded(model_dirs, data_jsonl, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    single = build_index(config(model_dirs["llama"], data_jsonl, root / "one.h5"), progress=False)
    sharded = build_index(
        config(model_dirs["llama"], data_jsonl, root / "four", shard_size=16), progress=False
    )
    return single, sharded


def test_sharded_index_answers_as_one_file(single_and_sharded):
    single, sharded = single_and_sharded
    assert sharded.is_dir() and sorted(p.name for p in (sharded / "shards").iterdir()) == [
        "00000.h5",
        "00001.h5",
        "00002.h5",
        "00003.h5",
    ]
    one, info_one, ex_one = scores(single)
    four, info_four, ex_four = scores(sharded)
    np.testing.assert_allclose(four.scores, one.scores, rtol=1e-5, atol=1e-6)
    assert (four.proponent_ids == one.proponent_ids).all()
    assert ex_four == ex_one  # global ids across shards
    assert info_four["n_examples"] == 60 and info_four["shards"] == 4
    with Index(sharded) as index:
        assert index.verify("full").content_id
        assert index.column("completion") == Index(single).column("completion")


def test_damaged_shard_is_named(single_and_sharded, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(single_and_sharded[1], copy)
    shard = copy / "shards" / "00002.h5"
    with Index(copy) as index:
        offset = index.parts[2].offset
    raw = bytearray(shard.read_bytes())
    raw[offset + 10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with Index(copy) as index:
        index.verify("fast")  # examples only
        with pytest.raises(IndexFormatError, match=r"00002\.h5: factor rows 0\.\.15"):
            index.verify("full")


def test_a_hand_edited_manifest_is_refused_at_open(single_and_sharded, tmp_path):
    """Every manifest field is under the fingerprint (a sharded index) or a checksum (a file):
    an edited damping (the scores would be reported at one alpha and computed at another) is
    refused when the index is opened, whatever the verify level (a file: test_integrity)."""
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(single_and_sharded[1], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["curvature"]["damping"] = 10.0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="manifest.json does not match its fingerprint"):
        Index(copy)
    for untouched in single_and_sharded:
        with Index(untouched) as index:
            assert index.verify("fast").method == "checksums"


def test_a_manifest_with_other_rows_names_both_counts(single_and_sharded, tmp_path):
    import shutil

    copy = tmp_path / "rows"
    shutil.copytree(single_and_sharded[1], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["n_examples"] = 61
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="the shards hold 60 rows, the manifest says 61"):
        Index(copy)


def test_a_shard_or_a_half_built_directory_is_not_an_index(single_and_sharded, tmp_path):
    with pytest.raises(IndexFormatError, match="one shard of a sharded index"):
        Index(single_and_sharded[1] / "shards" / "00000.h5")
    (tmp_path / "build.json").write_text("{}")
    with pytest.raises(IndexFormatError, match="unfinished build"):
        Index(tmp_path)
    manifest = json.loads((single_and_sharded[1] / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and [s["rows"] for s in manifest["shards"]] == [
        16,
        16,
        16,
        12,
    ]


def test_add_equals_building_everything(single_and_sharded, model_dirs, data_jsonl, tmp_path):
    from indexer.build import add_examples
    from indexer.verbatim import verbatim_summary

    train = load_examples(data_jsonl)
    rows = [json.loads(line) for line in data_jsonl.read_text().splitlines()]
    first = write_jsonl(tmp_path / "a.jsonl", rows[:37])
    more = write_jsonl(tmp_path / "b.jsonl", rows[37:])
    cfg = config(model_dirs["llama"], first, tmp_path / "grown", shard_size=16)
    grown = build_index(cfg, progress=False)
    serving = QueryEngine.open(grown, device="cpu")  # a server that opened the index before
    before = serving.score(QUERIES, k=5, keep_scores=True)
    content = serving.index.verify("full").content_id
    add_examples(grown, str(more), progress=False)
    after = serving.score(QUERIES, k=5, keep_scores=True)  # its files: the old basis and rows
    # what it verifies (its cache keys) names what it opened, not the index published since
    assert serving.index.verify("full").content_id == content
    serving.close()
    assert after.scores.shape == (2, 37) and np.array_equal(after.scores, before.scores)
    with Index(grown) as index:
        assert index.verify("full").content_id != content
    with Index(grown) as index:
        assert len(index) == len(train) == 60
        assert [p.n for p in index.parts] == [16, 16, 5, 16, 7]
        # the verbatim table grew with it: current, over all 60 rows
        assert verbatim_summary(index) == {
            **verbatim_summary(index),
            "current": True,
            "n_examples": 60,
        }
    want, _, ex_want = scores(single_and_sharded[1])
    got, _, ex_got = scores(grown)
    assert ex_got == ex_want
    # the rows of B were featurized in other batches (padding), so bf16 rows may round apart
    scale = np.abs(want.scores).max()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-3, atol=2e-4 * scale)
    assert (got.proponent_ids == want.proponent_ids).all()
    other = dataclasses.replace(cfg, rank=1)
    with pytest.raises(ConfigError, match="built with other rank: examples can be added only"):
        add_examples(grown, str(more), config=other, progress=False)


def test_add_without_curvature_then_refresh(single_and_sharded, model_dirs, data_jsonl, tmp_path):
    from indexer.build import add_examples, refresh_curvature

    rows = [json.loads(line) for line in data_jsonl.read_text().splitlines()]
    first = write_jsonl(tmp_path / "a.jsonl", rows[:37])
    more = write_jsonl(tmp_path / "b.jsonl", rows[37:])
    grown = build_index(
        config(model_dirs["llama"], first, tmp_path / "grown", shard_size=16), progress=False
    )
    with Index(grown) as index:
        basis = index.manifest.basis
    add_examples(grown, str(more), progress=False, curvature=False)
    with Index(grown) as index:
        summary = index.summary()
        assert summary["n_examples"] == 60 and summary["curvature_rows"] == 37
        assert index.manifest.basis == basis  # the basis of the first 37 rows, kept
        index.verify("full")
    stale, _, _ = scores(grown)
    refresh_curvature(grown, progress=False)
    with Index(grown) as index:
        assert index.summary()["curvature_rows"] == 60 and index.manifest.basis != basis
    got, _, _ = scores(grown)
    want, _, _ = scores(single_and_sharded[1])
    scale = np.abs(want.scores).max()
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-3, atol=2e-4 * scale)
    assert np.abs(stale.scores - want.scores).max() > 1e-3 * scale  # the refresh changed them


@pytest.mark.parametrize("groups", [1, 2, 3, 9])
def test_shard_groups_scanned_apart_and_merged_equal_one_scan(small_sharded_index, groups):
    from indexer.engine.scoring import merge_results, score_store

    engine = QueryEngine.open(small_sharded_index, device="cpu")
    try:
        index, p = engine.index, engine.preconditioned(QUERIES)
        split = index.shard_groups(groups)
        assert [g for r in split for g in r] == list(range(len(index.parts)))  # each once
        assert len(split) == min(groups, len(index.parts))
        parts = [
            (index.parts[g.start].first, score_store(index.store(g), p, k=7, keep_scores=True))
            for g in split
        ]
        merged, whole = merge_results(parts, 7), engine.scan(p, k=7, keep_scores=True)
    finally:
        engine.close()
    for got, want in (
        (merged.proponent_ids, whole.proponent_ids),
        (merged.opponent_ids, whole.opponent_ids),
    ):
        assert (got == want).all()
    np.testing.assert_allclose(merged.proponent_scores, whole.proponent_scores, rtol=1e-6)
    np.testing.assert_allclose(merged.scores, whole.scores, rtol=1e-6, atol=1e-7)


def test_an_interrupted_add_resumes_only_for_the_same_examples(model_dirs, data_jsonl, tmp_path):
    from indexer.build import add_examples
    from indexer.build.writers import growth_writer
    from indexer.storage.manifest import read_dir_manifest

    rows = [json.loads(line) for line in data_jsonl.read_text().splitlines()]
    first = write_jsonl(tmp_path / "a.jsonl", rows[:30])
    more = write_jsonl(tmp_path / "b.jsonl", rows[30:45])
    other = write_jsonl(tmp_path / "c.jsonl", rows[45:60])
    grown = build_index(
        config(model_dirs["llama"], first, tmp_path / "grown", shard_size=16), progress=False
    )
    # an add that stopped after creating its shard (nothing published)
    b = load_examples(more)
    manifest = read_dir_manifest(grown)
    growth_writer(grown, manifest, manifest, b, np.ones(len(b), dtype=np.int64), None)
    assert list((grown / "shards").glob("*.partial"))
    with pytest.raises(ConfigError, match="holds the rows of other examples"):
        add_examples(grown, str(other), progress=False)
    add_examples(grown, str(more), progress=False)
    with Index(grown) as index:
        assert len(index) == 45 and index.example(44) == b[-1]


def test_add_to_a_budgeted_index_keeps_its_ranks(model_dirs, data_jsonl, tmp_path):
    """Examples added to an index built with --bytes-per-example get the index's own c per
    layer (not chosen again on the added examples); another budget is refused."""
    from indexer.build import add_examples
    from indexer.engine.budget import min_bytes

    rows = [json.loads(line) for line in data_jsonl.read_text().splitlines()]
    first = write_jsonl(tmp_path / "a.jsonl", rows[:30])
    more = write_jsonl(tmp_path / "b.jsonl", rows[50:])
    cfg = config(model_dirs["llama"], first, tmp_path / "budget", shard_size=16)
    cfg = dataclasses.replace(cfg, bytes_per_example=14 * 2 * 48 + 16 * 4, truncation_sample=8)
    grown = build_index(cfg, progress=False)
    with Index(grown) as index:
        ranks = index.layout.ranks
        floor = min_bytes(index.layout.layers, 2)  # bf16
        assert floor < index.bytes_per_example()[0] <= cfg.bytes_per_example
    assert len(set(ranks)) > 1, ranks
    add_examples(grown, str(more), progress=False)
    with Index(grown) as index:
        assert index.layout.ranks == ranks and len(index) == 40
        assert index.summary()["bytes_budget"] == cfg.bytes_per_example
    engine = QueryEngine.open(grown, device="cpu")
    try:
        result = engine.score(QUERIES, k=3, keep_scores=True)
    finally:
        engine.close()
    assert result.scores is not None and result.scores.shape == (2, 40)
    assert np.isfinite(result.scores).all()
    other = dataclasses.replace(cfg, bytes_per_example=cfg.bytes_per_example + 48)
    with pytest.raises(ConfigError, match="bytes_per_example"):
        add_examples(grown, str(more), config=other, progress=False)
