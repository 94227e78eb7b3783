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
