"""How soon `lorif demo` answers, and how it grows: runs `lorif demo` (a fresh workdir; the
corpus cache in ~/.cache/lorif is used when present), asks the API every 2 s until the first
answer, then reads `/v1/index` every 30 s until the index holds every speech with the curvature
over all of them, and stops the demo with SIGINT (as Ctrl+C does).

    .venv/bin/python -m benchmarks.demo_first_answer --port 8765 --workdir /tmp/demo-bench

Prints one line per change: seconds since the command, rows, target rows, curvature rows and
the version number (README and the issue notes quote its figures).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

QUERY = {"prompt": "To be, or not to be: that is the question.", "k": 3}


def _get(url: str, body: dict | None = None) -> dict | None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            out: dict = json.loads(r.read())
            return out
    except (urllib.error.URLError, OSError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--workdir", default="/tmp/lorif-demo-bench")
    ap.add_argument("--limit-s", type=float, default=3600)
    args = ap.parse_args()
    lorif = Path(sys.executable).parent / "lorif"
    cmd = [str(lorif), "demo", "--port", str(args.port), "--workdir", args.workdir]
    url = f"http://127.0.0.1:{args.port}"
    t0 = time.monotonic()
    demo = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while _get(f"{url}/v1/attributions", QUERY) is None:
            if demo.poll() is not None or time.monotonic() - t0 > args.limit_s:
                sys.exit("the demo stopped (or took too long) before its first answer")
            time.sleep(2)
        print(f"first answer {time.monotonic() - t0:.1f} s after the command", flush=True)
        last = None
        while time.monotonic() - t0 < args.limit_s:
            s = _get(f"{url}/v1/index") or {}
            now = (s.get("n_examples"), s.get("target_rows"), s.get("curvature_rows"))
            if now != last and s:
                number = s["version"]["number"]
                line = f"rows {now[0]}  target {now[1]}  curvature {now[2]}  version {number}"
                print(f"{time.monotonic() - t0:7.1f} s  {line}", flush=True)
                last = now
            if s and now[1] is None and now[0] == now[2]:
                print(f"grown: {time.monotonic() - t0:.1f} s", flush=True)
                break
            time.sleep(30)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            print("the demo did not stop within 60 s of SIGINT", flush=True)


if __name__ == "__main__":
    main()
