"""Tasks: how a list of Examples becomes a model batch and a per-example (summed) loss.

A task is the generic entry point for any torch model: implement ``collate``, ``loss`` and
``position_mask`` (see :class:`Task`) and the indexer can build an index for it.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Example
from ..errors import DataError


class Task(Protocol):
    """What the indexer needs from a model family."""

    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Batch tensors for these examples (padded where needed)."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example loss, shape (B,): a SUM over the example's counted tokens/targets."""

    def position_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, T) bool, True at real positions; None when inputs have no padding."""

    def length(self, example: Example) -> int:
        """Cost proxy used to group similar examples into batches."""


class CausalLMTask:
    """Next-token loss summed over completion tokens; right padding contributes exactly zero."""

    def __init__(self, tokenizer: Any, max_tokens: int = 512, chat_template: bool = False):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.chat_template = chat_template
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)

    def encode(self, example: Example) -> tuple[list[int], list[int]]:
        """Token ids and loss mask (1 = this token is a counted prediction target)."""
        prompt = example.prompt
        if self.chat_template and prompt:
            prompt = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        completion_ids = self.tokenizer(example.completion, add_special_tokens=False)["input_ids"]
        ids = (list(prompt_ids) + list(completion_ids))[: self.max_tokens]
        mask = ([0] * len(prompt_ids) + [1] * len(completion_ids))[: self.max_tokens]
        return ids, mask

    def length(self, example: Example) -> int:
        return len(self.encode(example)[0])

    def full_length(self, example: Example) -> int:
        """Token count before truncation to ``max_tokens``."""
        return len(CausalLMTask(self.tokenizer, 1 << 30, self.chat_template).encode(example)[0])

    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        encoded = [self.encode(ex) for ex in examples]
        width = max(len(ids) for ids, _ in encoded)
        if width == 0:
            raise DataError("an example has no tokens")
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        loss_mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for b, (ids, mask) in enumerate(encoded):
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[b, : len(ids)] = 1
            loss_mask[b, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
        return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["input_ids"][:, 1:]
        counted = batch["loss_mask"][:, 1:] & batch["attention_mask"][:, 1:].bool()
        ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
        return torch.where(counted, ce, torch.zeros((), device=ce.device)).sum(dim=1)

    def position_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["attention_mask"].bool()


class ClassificationTask:
    """Classifier on fixed-size inputs: ``example.inputs`` is a feature vector and
    ``example.meta["label"]`` the class; loss = cross-entropy (one target per example)."""

    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        x = torch.stack([torch.as_tensor(ex.inputs, dtype=torch.float32) for ex in examples])
        y = torch.tensor([int(ex.meta["label"]) for ex in examples], dtype=torch.long)
        return {"x": x, "y": y}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(batch["x"]).float(), batch["y"], reduction="none")

    def position_mask(self, batch: dict[str, torch.Tensor]) -> None:
        return None

    def length(self, example: Example) -> int:
        return 1
