"""LDS against storage per example (the Pareto picture), one point per method/config.

    python -m benchmarks.lds.plot results/digits.json docs/lds_digits.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLORS = {"LoRIF": "#1f5fbf", "LoGRA-dense": "#c5221f", "grad-dot": "#7a7a7a",
          "TRAK-style": "#e08a00"}


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == method]
        x = [r["bytes_per_example"] for r in pts]
        y = [r["lds"] for r in pts]
        err = [[r["lds"] - r["ci"][0] for r in pts], [r["ci"][1] - r["lds"] for r in pts]]
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=method,
                    color=COLORS.get(method, "black"))
        for r in pts:
            ax.annotate(r["config"], (r["bytes_per_example"], r["lds"]), fontsize=6,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes per training example (bf16, log scale)")
    ax.set_ylabel("LDS (mean Spearman, 95 % CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    plot(json.loads(src.read_text()), dst, sys.argv[3] if len(sys.argv) > 3 else src.stem)
