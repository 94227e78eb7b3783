"""The service on a sharded index (format 2): the same answers as on the one-file index of the
same content, examples by global id from any shard, the index summary, the scorer process."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings

PROMPTS = ["the king.", "storm night crown fool gold.", "the sea and the moon."]


def answers(index, scorer: str) -> tuple[list[dict], dict, dict]:
    settings = ServiceSettings(index=str(index), device="cpu", scorer=scorer, cache_size=0)
    with TestClient(create_app(settings)) as c:
        got = [
            c.post("/v1/attributions", json={"prompt": p, "k": 5, "direction": "both"}).json()
            for p in PROMPTS
        ]
        return got, c.get("/v1/index").json(), c.get("/v1/examples/50").json()


def test_sharded_index_serves_as_one_file(small_index, small_sharded_index):
    one, info_one, example_one = answers(small_index, "thread")
    four, info_four, example_four = answers(small_sharded_index, "process")
    assert info_four["n_examples"] == info_one["n_examples"] == 60
    assert info_four["shards"] == 4 and info_one["shards"] == 0
    assert example_four == example_one  # id 50 lives in the fourth shard
    for a, b in zip(four, one, strict=True):
        for side in ("proponents", "opponents"):
            assert [r["example_id"] for r in a[side]] == [r["example_id"] for r in b[side]]
            np.testing.assert_allclose(
                [r["score"] for r in a[side]], [r["score"] for r in b[side]], rtol=1e-4, atol=1e-6
            )
