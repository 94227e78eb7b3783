"""LDS against storage per example (the Pareto picture), one point per method/config.

    python -m benchmarks.lds.plot docs/lds_digits.png benchmarks/lds/results/digits.json \
        benchmarks/lds/results/digits_peers.json --title "digits MLP"

Rows without stored bytes (methods that keep no per-example index and recompute training
gradients per query batch, e.g. kronfluence) are drawn as horizontal reference lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLORS = {
    "LoRIF": "#1f5fbf",
    "LoGRA-dense": "#c5221f",
    "grad-dot": "#7a7a7a",
    "TRAK-style": "#e08a00",
    "dattri LoGra": "#8e44ad",
    "dattri TRAK": "#16a085",
    "kronfluence": "#2e7d32",
    "LoRIF K-FAC": "#5aa9e6",
    "LoRIF EK-FAC": "#0b2e6b",
}
MARKERS = {"dattri LoGra": "s", "dattri TRAK": "D", "LoRIF K-FAC": "^", "LoRIF EK-FAC": "v"}


def drawn(row: dict) -> bool:
    """Rows of benchmarks/lds/preconditioners.py are drawn at the build's damping only, and
    only its K-FAC / EK-FAC ones (LoRIF's own rows come from the setting's evaluation)."""
    config = row.get("config", "")
    if "α=" not in config:
        return True
    return config.endswith(" α=0.1") and "unit" not in config and row["method"] != "LoRIF"


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if "lds" in r]  # rows of peers that did not run carry "error"
    points = [r for r in scored if r["bytes_per_example"] is not None]
    lines = [r for r in scored if r["bytes_per_example"] is None]
    fig, ax = plt.subplots(figsize=(7.5, 6.0), dpi=120)
    for method in dict.fromkeys(r["method"] for r in points):
        pts = [r for r in points if r["method"] == method]
        x = [r["bytes_per_example"] for r in pts]
        y = [r["lds"] for r in pts]
        err = [[r["lds"] - r["ci"][0] for r in pts], [r["ci"][1] - r["lds"] for r in pts]]
        ax.errorbar(
            x,
            y,
            yerr=err,
            fmt=MARKERS.get(method, "o"),
            capsize=3,
            label=method,
            color=COLORS.get(method, "black"),
        )
        for r in pts:
            ax.annotate(
                r["config"],
                (r["bytes_per_example"], r["lds"]),
                fontsize=5.5,
                xytext=(4, 3),
                textcoords="offset points",
            )
    for style, r in zip(["--", ":", "-.", (0, (5, 1, 1, 1))], lines, strict=False):
        color = COLORS.get(r["method"], "black")
        ax.axhline(
            r["lds"],
            ls=style,
            lw=1,
            color=color,
            label=f"{r['method']} {r['config']} (no index: recomputes gradients)",
        )
        ax.axhspan(r["ci"][0], r["ci"][1], color=color, alpha=0.07)
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes per training example (2 bytes per number, log scale)")
    ax.set_ylabel("LDS (mean Spearman, 95 % CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("results", type=Path, nargs="+", help="result JSON files (rows)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    rows = [r for path in args.results for r in json.loads(path.read_text()) if drawn(r)]
    plot(rows, args.out, args.title or args.results[0].stem)


if __name__ == "__main__":
    main()
