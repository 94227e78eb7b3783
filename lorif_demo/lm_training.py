"""Train a small Llama-architecture LM from scratch on a text corpus (CPU-friendly).

Byte-level BPE tokenizer trained on the training split; the model sees the training texts packed
into fixed-length windows (each text starts with BOS); validation loss is the mean next-token
cross-entropy over held-out texts, next to a unigram baseline fitted on the training tokens.
Used to produce the demo model (models/shakespeare-llama/, see its README for the command).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.data import Example
from indexer.models.tasks import CausalLMTask

from .toy import save_lm, tiny_lm, train_tokenizer


@dataclass
class TrainConfig:
    vocab_size: int = 4096
    hidden: int = 256
    layers: int = 4
    heads: int = 8
    context: int = 128
    batch_size: int = 32
    steps: int = 300
    lr: float = 2e-3
    warmup: int = 20
    weight_decay: float = 0.1
    seed: int = 0


def _windows(token_lists: list[list[int]], context: int) -> torch.Tensor:
    stream = np.fromiter((t for ids in token_lists for t in ids), dtype=np.int64)
    n = len(stream) // (context + 1)
    return torch.from_numpy(stream[: n * (context + 1)].reshape(n, context + 1))


def unigram_loss(train_ids: list[list[int]], val_ids: list[list[int]], vocab: int) -> float:
    """Cross-entropy (nats/token) of add-one-smoothed unigram frequencies on val targets."""
    counts = (
        np.bincount(np.concatenate([np.asarray(x[1:]) for x in train_ids]), minlength=vocab).astype(
            np.float64
        )
        + 1.0
    )
    logp = np.log(counts / counts.sum())
    targets = np.concatenate([np.asarray(x[1:]) for x in val_ids])
    return float(-logp[targets].mean())


@torch.no_grad()
def eval_loss(
    model: torch.nn.Module, task: CausalLMTask, texts: list[str], batch_size: int = 32
) -> float:
    """Mean next-token loss (nats/token) over ``texts`` as whole examples (BOS + text)."""
    total, count = 0.0, 0
    examples = sorted((Example(completion=t) for t in texts), key=lambda e: len(e.completion))
    for s in range(0, len(examples), batch_size):
        batch = task.collate(examples[s : s + batch_size])
        total += float(task.loss(model, batch).sum())
        count += int((batch["loss_mask"][:, 1:] & batch["attention_mask"][:, 1:].bool()).sum())
    return total / count


def _optimizer(
    model: torch.nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on vectors) with linear warm-up and a cosine schedule."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / cfg.warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
        ),
    )
    return opt, sched


def _train_steps(
    model: torch.nn.Module, windows: torch.Tensor, cfg: TrainConfig, log_every: int
) -> list[float]:
    """``cfg.steps`` optimizer steps over shuffled windows; the loss of each step."""
    opt, sched = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(windows), generator=gen)
    model.train()
    history, t0 = [], time.perf_counter()
    for step in range(cfg.steps):
        idx = order[(torch.arange(cfg.batch_size) + step * cfg.batch_size) % len(windows)]
        batch = windows[idx]
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            rate = (step + 1) * cfg.batch_size * cfg.context / (time.perf_counter() - t0)
            print(f"step {step:5d}  loss {history[-1]:.3f}  {rate:.0f} tok/s", flush=True)
    model.eval()
    return history


def train(
    train_texts: list[str],
    val_texts: list[str],
    out_dir: str | Path,
    cfg: TrainConfig,
    log_every: int = 25,
) -> dict[str, Any]:
    """Train tokenizer and model, save both (fp16) with training_report.json; the report."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    tok = train_tokenizer(train_texts, vocab_size=cfg.vocab_size)
    train_ids = [tok(t)["input_ids"] for t in train_texts]  # BOS + text
    val_ids = [tok(t)["input_ids"] for t in val_texts]
    windows = _windows(train_ids, cfg.context)
    model = tiny_lm(
        "llama",
        len(tok),
        hidden=cfg.hidden,
        layers=cfg.layers,
        heads=cfg.heads,
        seed=cfg.seed,
        tie_embeddings=True,
    )
    history = _train_steps(model, windows, cfg, log_every)
    report = {
        "config": asdict(cfg),
        "params": sum(p.numel() for p in model.parameters()),
        "train_texts": len(train_texts),
        "val_texts": len(val_texts),
        "train_tokens": int(sum(len(x) for x in train_ids)),
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.context,
        "epochs": round(cfg.steps * cfg.batch_size / len(windows), 3),
        "final_train_loss": round(float(np.mean(history[-20:])), 4),
        "val_loss": round(eval_loss(model, CausalLMTask(tok, max_tokens=512), val_texts), 4),
        "val_unigram_loss": round(unigram_loss(train_ids, val_ids, len(tok)), 4),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
    }
    model.half()
    out = save_lm(model, tok, out_dir)
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
