"""docs/index-format.md is precise enough: its standalone reader reproduces lorif's scores."""

from __future__ import annotations

import re

import numpy as np
import torch

from indexer.engine.scoring import LayerPreconditioner, precondition, score_rows
from indexer.storage.codec import decode_rows as decode
from indexer.storage.reader import Index
from tests.helpers import ROOT

DOC = ROOT / "docs" / "index-format.md"


def test_standalone_reader_matches_lorif(small_index):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[-1]
    env = {"INDEX_PATH": str(small_index)}
    exec(compile(code, str(DOC), "exec"), env)  # noqa: S102 - our own documentation
    env["f"].close()
    with Index(small_index) as index:
        rows = decode(np.array(index.file["factors"]), index.dtype)
        grads = {n: torch.as_tensor(g)[None].float() for n, g in env["query"].items()}
        pre = {n: LayerPreconditioner.from_curvature(c) for n, c in index.curvature().items()}
        want = score_rows(index.layout, rows, precondition(grads, pre))[0].numpy()
    got = env["result"]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_integrity_checksums_as_documented(small_index):
    """docs/index-format.md's *Integrity* recomputed with hashlib and h5py alone."""
    import hashlib

    import h5py

    def blake(*chunks: bytes) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for c in chunks:
            h.update(c)
        return h.digest()

    with h5py.File(small_index, "r") as f:
        g, factors = f["integrity"], f["factors"]
        b = int(g.attrs["block_rows"])
        assert b == max(1, (16 << 20) // (factors.shape[1] * factors.dtype.itemsize))
        n = factors.shape[0]
        for j, start in enumerate(range(0, n, b)):
            stop = min(start + b, n)
            assert g["factors"][j].tobytes() == blake(factors[start:stop].tobytes())
            texts = [
                s.encode()
                for name in ("prompt", "completion", "meta")
                for s in f[f"examples/{name}"].asstr()[start:stop]
            ]
            chunks = [len(t).to_bytes(8, "little") + t for t in texts]
            tokens = np.ascontiguousarray(f["examples/n_tokens"][start:stop], "<i4").tobytes()
            assert g["examples"][j].tobytes() == blake(*chunks, tokens)
        layers = sorted(f["curvature"])
        curvature = [
            np.ascontiguousarray(a, dtype=d).tobytes()
            for name in layers
            for a, d in (
                (f[f"curvature/{name}/V"][()], "<f4"),
                (f[f"curvature/{name}/sigma2"][()], "<f8"),
                (f[f"curvature/{name}"].attrs["lambda"], "<f8"),
            )
        ]
        assert g.attrs["curvature"] == blake(*curvature).hex()
