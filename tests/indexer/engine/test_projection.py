"""Projections: reproducible from (seed, layer), independent of torch's RNG, checksummed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.engine import projection
from indexer.errors import IndexFormatError
from indexer.models.featurizer import Featurizer
from indexer.models.tasks import CausalLMTask
from tests.helpers import make_model


def test_rademacher_is_reproducible_and_independent_of_torch_rng():
    torch.manual_seed(1)
    a = projection.rademacher(projection.stream_key(0, "layer.q_proj", "in"), 64, 16)
    torch.manual_seed(2)
    np.random.seed(3)
    b = projection.rademacher(projection.stream_key(0, "layer.q_proj", "in"), 64, 16)
    assert np.array_equal(a, b)
    assert set(np.unique(a)) == {np.float32(-0.25), np.float32(0.25)}  # +-1/sqrt(16)
    assert abs((a > 0).mean() - 0.5) < 0.1
    c = projection.rademacher(projection.stream_key(0, "layer.q_proj", "out"), 64, 16)
    d = projection.rademacher(projection.stream_key(1, "layer.q_proj", "in"), 64, 16)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_rademacher_golden_values():
    """First entries of a fixed stream, so the definition cannot drift silently."""
    key = projection.stream_key(0, "golden", "in")
    assert key == int.from_bytes(
        __import__("hashlib").sha256(b"0:golden:in").digest()[:8], "little"
    )
    m = projection.rademacher(key, 4, 4) * 2  # entries +-1
    x = np.arange(16, dtype=np.uint64) + np.uint64(key)
    with np.errstate(over="ignore"):
        expect = np.where(projection._splitmix64(x) & np.uint64(1), -1.0, 1.0).reshape(4, 4)
    assert np.array_equal(m, expect)
    # SplitMix64 reference value (Vigna): state 0 -> first output 0xE220A8397B1DCDAF
    with np.errstate(over="ignore"):
        assert int(projection._splitmix64(np.array([0], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF


def test_checksum_mismatch_is_refused(tokenizer):
    feat = Featurizer.create(make_model("llama", tokenizer), CausalLMTask(tokenizer), proj_factor=4)
    sums = {n: list(v) for n, v in feat.checksums().items()}
    feat.verify_checksums(sums)
    name = next(iter(sums))
    sums[name][0] = "0" * 64
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        feat.verify_checksums(sums)
