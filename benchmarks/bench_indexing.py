"""Indexing throughput: `lorif index build` against a plain forward+backward of the same batches.

Both sides see the same model, the same examples and the same length-sorted batches. The plain
side computes the training loss and the full weight gradients (what one epoch of fine-tuning
would cost, without the optimizer step); the LoRIF side is the whole build: capture, projection,
rank-c factorization, writes, the curvature passes and publishing. Run:

    python benchmarks/bench_indexing.py                      # a 5.2M-parameter Llama, random text
    python benchmarks/bench_indexing.py --model DIR --data train.jsonl --n 256
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from indexer.build import build_index
from indexer.config import BuildConfig, CurvatureConfig
from indexer.data import load_examples
from indexer.models.loading import load_causal_lm
from indexer.models.tasks import CausalLMTask
from lorif_demo.toy import save_lm, tiny_lm, train_tokenizer


def synthetic(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 160))) for _ in range(n)]


def plain_forward_backward(
    model, task, examples, batch_size, device: str = "cpu", autocast: bool = False
) -> float:
    """Seconds for loss + full weight gradients over the build's length-sorted batches (with
    the build's device and mixed precision)."""
    lengths = np.array([task.length(e) for e in examples])
    order = np.argsort(lengths, kind="stable")
    model.train(False)
    for p in model.parameters():
        p.requires_grad_(True)
    dev = torch.device(device)
    t = time.perf_counter()
    for s in range(0, len(order), batch_size):
        batch = task.collate([examples[i] for i in order[s : s + batch_size]])
        batch = {k: v.to(dev) for k, v in batch.items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            loss = task.loss(model, batch).sum()
        loss.backward()
        model.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default="", help="HF model dir/GGUF (default: a built 5.2M-parameter Llama)"
    )
    ap.add_argument("--data", default="", help="jsonl (default: synthetic text)")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--proj-factor", type=int, default=8)
    ap.add_argument("--rank", type=int, default=1)
    ap.add_argument("--curvature-rank", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"])
    ap.add_argument("--hidden", type=int, default=256, help="the built Llama's width")
    ap.add_argument("--layers", type=int, default=4, help="... its blocks (2048 x 20: 1.0B)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    report(args, result)


def measure(args: argparse.Namespace) -> dict:
    """Plain forward+backward and a full build of the same batches; the figures."""

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        if args.data:
            data = Path(args.data)
        else:
            data = tmpdir / "data.jsonl"
            data.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic(args.n)))
        model_spec = args.model
        if not model_spec:
            texts = [e.text for e in load_examples(data, args.n)]
            tok = train_tokenizer(texts, vocab_size=4096)
            size = {
                k: getattr(args, k, v) for k, v in (("hidden", 256), ("layers", 4), ("heads", 8))
            }
            model = tiny_lm("llama", len(tok), **size)  # random init: no download
            model_spec = str(save_lm(model, tok, tmpdir / "model"))
            del model
        loaded = load_causal_lm(model_spec, args.device)
        n_params = sum(p.numel() for p in loaded.model.parameters())
        task = CausalLMTask(loaded.tokenizer, args.max_tokens)
        examples = load_examples(data, args.n)
        tokens = sum(task.length(e) for e in examples)

        bf16 = args.autocast == "bf16"
        warm = examples[: args.batch_size]
        plain_forward_backward(loaded.model, task, warm, args.batch_size, args.device, bf16)
        plain_s = plain_forward_backward(
            loaded.model, task, examples, args.batch_size, args.device, bf16
        )
        del loaded

        cfg = BuildConfig(
            model=model_spec,
            data=str(data),
            output=str(tmpdir / "bench"),
            limit=args.n,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
            proj_factor=args.proj_factor,
            rank=args.rank,
            curvature=CurvatureConfig(rank=args.curvature_rank),
            device=args.device,
            autocast=args.autocast,
        )
        t = time.perf_counter()
        path = build_index(cfg, progress=False)
        build_s = time.perf_counter() - t
        from indexer import Index

        with Index(path) as built:
            info = built.manifest.build_info or {}

    n = len(examples)
    result = {
        "model_params": n_params,
        "n": n,
        "tokens": tokens,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "plain_seconds": round(plain_s, 2),
        "build_seconds": round(build_s, 2),
        "load_seconds": info["load_seconds"],
        "build_seconds_excl_load": round(build_s - info["load_seconds"], 2),
        "featurize_seconds": info["featurize_seconds_this_run"],
        "curvature_seconds": info["curvature_seconds"],
        "plain_examples_per_s": round(n / plain_s, 1),
        "build_examples_per_s": round(n / build_s, 1),
        "plain_tokens_per_s": round(tokens / plain_s),
        "build_tokens_per_s": round(tokens / build_s),
        "ratio_build_over_plain": round((build_s - info["load_seconds"]) / plain_s, 2),
        "ratio_featurize_over_plain": round(info["featurize_seconds_this_run"] / plain_s, 2),
    }
    return result


def report(args: argparse.Namespace, result: dict) -> None:
    n_params, n, tokens = result["model_params"], result["n"], result["tokens"]
    plain_s = result["plain_seconds"]
    print(
        f"model {n_params / 1e6:.1f}M params, {n} examples, {tokens} tokens, batch "
        f"{args.batch_size}, {result['threads']} threads, f={args.proj_factor} "
        f"c={args.rank} r={args.curvature_rank} device {args.device} autocast {args.autocast}"
    )
    print(f"{'':28s}{'seconds':>9s}{'examples/s':>12s}{'tokens/s':>10s}")
    print(
        f"{'plain forward+backward':28s}{plain_s:9.2f}{n / plain_s:12.1f}{tokens / plain_s:10.0f}"
    )
    work = result["build_seconds_excl_load"]
    print(
        f"{'lorif index build':28s}{work:9.2f}{n / work:12.1f}{tokens / work:10.0f}"
        "   (excluding the one-time model/data load)"
    )
    print(f"{'  featurize+factorize+store':28s}{result['featurize_seconds']:9.2f}")
    print(f"{'  curvature':28s}{result['curvature_seconds']:9.2f}")
    print(f"{'  model + data load (once)':28s}{result['load_seconds']:9.2f}")
    print(
        f"ratio build / plain = {result['ratio_build_over_plain']:.2f}x "
        f"(featurize+store alone {result['ratio_featurize_over_plain']:.2f}x; goal <= 2x)"
    )


if __name__ == "__main__":
    main()
