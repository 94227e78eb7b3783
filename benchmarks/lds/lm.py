"""What the language-model LDS settings (B: Shakespeare, C: Milton) share: one ``LMSetting``
names a corpus, a model architecture and a training recipe; it trains the full model, retrains
the subsets for the ground truth and hands the evaluation its examples.

Training: AdamW (weight decay 0.01), shuffled minibatches of ``batch``, ``epochs`` over the
(sub)set, mean next-token loss per batch; a query's loss is its summed next-token loss.
Tokenizer: byte-level BPE (1,024) fitted on the N training texts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import harness
from .harness import random_subsets, read_ground_truth, retrain_losses, save_ground_truth

BATCH = 32


def fit(
    model: torch.nn.Module,
    task,
    texts: list[str],
    seed: int,
    epochs: int,
    lr: float = 3e-3,
    stop: Callable[[int], bool] | None = None,
    batch: int = BATCH,
) -> int:
    """Train ``model`` in place (AdamW, shuffled per epoch with ``seed``) for ``epochs``, or
    until ``stop(epoch)`` says so; returns the epochs run."""
    from indexer.data import Example

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    examples = [Example(completion=t) for t in texts]
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(examples), generator=gen).tolist()
        for s in range(0, len(order), batch):
            chunk = task.collate([examples[i] for i in order[s : s + batch]])
            losses = task.loss(model, chunk)
            n_tokens = (chunk["loss_mask"][:, 1:] & chunk["attention_mask"][:, 1:].bool()).sum()
            opt.zero_grad()
            (losses.sum() / n_tokens).backward()
            opt.step()
        if stop is not None and stop(epoch):
            return epoch
    return epochs


@torch.no_grad()
def query_losses(model, task, texts: list[str]) -> np.ndarray:
    """(Q,) summed next-token loss of each text."""
    from indexer.data import Example

    return task.loss(model, task.collate([Example(completion=t) for t in texts])).numpy()


@dataclass(frozen=True)
class LMSetting:
    """A corpus (``load`` -> train texts, query texts), a model and its training recipe."""

    name: str
    load: Callable[[], tuple[list[str], list[str]]]
    ground_truth: Path
    arch: str = "llama"
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    tie_embeddings: bool = True
    epochs: int = 4
    lr: float = 3e-3
    max_tokens: int = 96

    def task(self, train_texts: list[str]):
        from indexer.models.tasks import CausalLMTask
        from lorif_demo.toy import train_tokenizer

        return CausalLMTask(train_tokenizer(train_texts, vocab_size=1024), self.max_tokens)

    def make_model(self, vocab: int, seed: int) -> torch.nn.Module:
        from lorif_demo.toy import tiny_lm

        return tiny_lm(
            self.arch,
            vocab,
            hidden=self.hidden,
            layers=self.layers,
            heads=self.heads,
            seed=seed,
            tie_embeddings=self.tie_embeddings,
        )

    def train(self, task, texts: list[str], seed: int) -> torch.nn.Module:
        """The model trained on ``texts``; deterministic given (texts, seed)."""
        model = self.make_model(len(task.tokenizer), seed).train()
        fit(model, task, texts, seed, self.epochs, self.lr)
        return model.eval()

    def trained(self):
        """(model trained on all N texts, frozen; its task; training examples; queries)."""
        from indexer.data import Example

        train_texts, query_texts = self.load()
        task = self.task(train_texts)
        model = self.train(task, train_texts, seed=0)
        for p in model.parameters():
            p.requires_grad_(False)
        return (
            model,
            task,
            [Example(completion=t) for t in train_texts],
            [Example(completion=t) for t in query_texts],
        )

    def config(self, n_train: int, n_query: int, m: int, seeds: int) -> dict:
        return {
            "setting": self.name,
            "n_train": n_train,
            "n_query": n_query,
            "m": m,
            "seeds": seeds,
            "epochs": self.epochs,
            "batch": BATCH,
            "lr": self.lr,
            "max_tokens": self.max_tokens,
            "subset_seed": 1,
        }

    def losses_of(self, task, train_texts: list[str], query_texts: list[str]):
        """(indices of the training texts, seed) -> the query losses of a retrained model."""

        def losses_of(idx: np.ndarray, seed: int) -> np.ndarray:
            model = self.train(task, [train_texts[j] for j in idx], seed)
            return query_losses(model, task, query_texts)

        return losses_of

    def make_ground_truth(self, m: int, seeds: int, out: Path) -> None:
        """Retrain M random halves with seeds 0..seeds-1 and save their query losses."""
        train_texts, query_texts = self.load()
        task = self.task(train_texts)
        config = self.config(len(train_texts), len(query_texts), m, seeds)
        subsets = random_subsets(m, len(train_texts), seed=1)
        losses_of = self.losses_of(task, train_texts, query_texts)
        harness.make_ground_truth(out, subsets, seeds, losses_of, len(query_texts), config, 5)

    def add_seeds(self, gt: Path, extra: int) -> None:
        """Retrain the committed subsets with ``extra`` more seeds and append their losses."""
        z = np.load(gt)
        subsets, _, config = read_ground_truth(gt)
        old = z["losses"]  # (M, seeds, Q)
        train_texts, query_texts = self.load()
        task = self.task(train_texts)
        seeds = range(old.shape[1], old.shape[1] + extra)
        losses_of = self.losses_of(task, train_texts, query_texts)
        new, seconds = retrain_losses(subsets, seeds, losses_of, old.shape[2], every=5)
        config["seeds"] = old.shape[1] + extra
        config["retrain_seconds"] = round(config["retrain_seconds"] + seconds, 1)
        save_ground_truth(gt, subsets, np.concatenate([old, new], axis=1), config)
        print(f"ground truth: {gt} ({len(subsets)} subsets x {config['seeds']} seeds)")
