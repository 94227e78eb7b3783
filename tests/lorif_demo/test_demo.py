"""The README's demo, in its --quick form: corpus -> committed model -> index -> answers."""

from __future__ import annotations

import re

from indexer.storage.reader import Index
from lorif_demo.demo import DEMO_QUERIES, QUICK_STRIDE
from tests.helpers import run_cli
from tests.lorif_demo.test_shakespeare import EXPECTED_SPEECHES


def test_quick_demo_end_to_end(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(
        monkeypatch, capsys, "demo", "--quick", "--no-serve", "--workdir", str(tmp_path), "-k", "3"
    )
    assert code == 0, err[-2000:]
    with Index(tmp_path / "shakespeare-quick") as index:
        assert index.sharded
        n = len(index)
        # every 15th speech, and Hamlet's and Juliet's speeches the first two queries quote
        assert n == -(-EXPECTED_SPEECHES // QUICK_STRIDE) + 2
        assert index.manifest.model["spec"] == "shakespeare-llama"
        assert {"play", "speaker", "act", "scene", "split"} <= set(index.example(0).meta)
    assert out.count("query:") == len(DEMO_QUERIES)
    assert "[Hamlet III.I, HAMLET] “To be, or not to be,--that is the question”" in out, out
    assert "[Romeo and Juliet II.II, JULIET] “O Romeo, Romeo! wherefore art thou Romeo”" in out
    ranks = re.findall(r"^\s+(\d)\.\s+[+-]\d", out, re.M)
    assert ranks == ["1", "2", "3"] * len(DEMO_QUERIES)
    # a second run reuses the index and answers the same
    code2, out2, _ = run_cli(
        monkeypatch, capsys, "demo", "--quick", "--no-serve", "--workdir", str(tmp_path), "-k", "3"
    )
    assert code2 == 0 and out2.split("query:", 1)[1] == out.split("query:", 1)[1]
