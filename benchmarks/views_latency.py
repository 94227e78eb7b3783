"""How fast the page's views answer (issue 29: "within 1 s on the quick demo index"): serves an
index with ``lorif serve`` (the quick demo index by default, built when missing) and times each
view over HTTP, first uncached (a scan), then cached — the page's fetch (k = 100), the same with
influence summed by a metadata key over all N, two queries side by side, an example's context
and one explanation (what each of the top tokens costs).

    .venv/bin/python -m benchmarks.views_latency [--index PATH] [--key title]

Prints one line per view: milliseconds uncached and cached, median of ``--repeat`` distinct
queries (the uncached ones are new prompts each time).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

LINES = [
    "To be, or not to be: that is the question.",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "Now is the winter of our discontent.",
    "All the world's a stage, and all the men and women merely players.",
    "The quality of mercy is not strain'd.",
    "Friends, Romans, countrymen, lend me your ears.",
    "Is this a dagger which I see before me?",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(call: Callable[[], httpx.Response]) -> float:
    t0 = time.perf_counter()
    r = call()
    r.raise_for_status()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="")
    ap.add_argument("--key", default="title", help="the metadata key of the totals")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    index = args.index
    if not index:
        from lorif_demo.demo import ensure_demo_index

        index = str(ensure_demo_index(".lorif-demo", quick=True, progress=False))
    port, lorif = _port(), Path(sys.executable).parent / "lorif"
    server = subprocess.Popen(
        [str(lorif), "serve", index, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        while True:
            try:
                if client.get("/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        rows = client.get("/v1/index").json()["n_examples"]
        print(f"index {index}: {rows:,} examples; median of {args.repeat}, ms")
        print(f"{'view':44s} {'uncached':>9s} {'cached':>9s}")
        for name, make in _views(args.key).items():
            first, again = [], []
            for i in range(args.repeat):
                call = make(LINES[i % len(LINES)] + f" ({i})")
                first.append(_timed(lambda call=call: call(client)))
                again.append(_timed(lambda call=call: call(client)))
            print(f"{name:44s} {statistics.median(first):9.0f} {statistics.median(again):9.0f}")
    finally:
        server.terminate()
        server.wait(30)


def _views(key: str) -> dict[str, Callable[[str], Callable[[httpx.Client], httpx.Response]]]:
    """view name -> (a new prompt -> one request of that view)."""

    def post(path: str, body: dict) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.post(path, json=body)

    return {
        "attributions k=100 (+ histogram)": lambda p: post(
            "/v1/attributions", {"prompt": p, "k": 100}
        ),
        f"attributions k=100 + totals by {key} (all N)": lambda p: post(
            "/v1/attributions", {"prompt": p, "k": 100, "totals_by": key}
        ),
        "compare two queries (k=10, depth 100)": lambda p: post(
            "/v1/compare", {"a": {"prompt": p}, "b": {"prompt": p + " again"}, "k": 10}
        ),
        "context of an example (n=2)": lambda p: (
            lambda c: c.get(f"/v1/examples/{len(p) * 7}/context?n=2")
        ),
        "one explanation (a result's top tokens)": lambda p: post(
            "/v1/explanations", {"prompt": p, "example_id": len(p)}
        ),
    }


if __name__ == "__main__":
    main()
