"""Training examples: loading (jsonl / saved HF dataset) and the in-memory record type."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError


@dataclass
class Example:
    """One training example or query.

    Language data: ``prompt`` (no loss) followed by ``completion`` (loss counted); plain text is
    ``prompt=""``, ``completion=text``. Non-text tasks put the model input in ``inputs`` and a
    human-readable rendering in ``completion``.
    """

    completion: str
    prompt: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: Any = None

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def query_example(prompt: str, completion: str | None = None) -> Example:
    """A query as the CLI and the API take it: without a completion every token of ``prompt``
    counts in the loss; with one, only the completion's tokens do. Blank text is refused."""
    if completion is None:
        if not prompt.strip():
            raise DataError("the query is empty")
        return Example(completion=prompt)
    if not completion.strip():
        raise DataError("the completion is empty (omit it to score the whole prompt)")
    return Example(completion=completion, prompt=prompt)


def snippet(text: str, width: int) -> str:
    """Whitespace-collapsed text, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def example_from_record(record: dict[str, Any], where: str) -> Example:
    """Map a jsonl/dataset row to an Example; unknown fields become metadata."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    rest = {k: v for k, v in record.items() if k not in ("text", "prompt", "completion")}
    if "text" in record:
        text = record["text"]
        if not isinstance(text, str):
            raise DataError(f"{where}: field 'text' must be a string")
        return Example(completion=text, meta=rest)
    if "completion" in record:
        prompt, completion = record.get("prompt", ""), record["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError(f"{where}: fields 'prompt' and 'completion' must be strings")
        return Example(completion=completion, prompt=prompt, meta=rest)
    raise DataError(
        f"{where}: needs a 'text' field or 'prompt' + 'completion' fields "
        f"(found: {', '.join(sorted(record)) or 'none'})"
    )


def _jsonl_records(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def _hf_dataset_records(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise DataError("reading a saved HF dataset needs the `datasets` package") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - any load failure is a data problem for the user
        raise DataError(f"{path}: not a saved HF dataset ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: a DatasetDict without a 'train' split ({list(ds)})")
        ds = ds["train"]
    for i, row in enumerate(ds):
        yield f"{path}[{i}]", row


def load_examples(path: str | Path, limit: int = 0) -> list[Example]:
    """Read examples from a .jsonl file or a saved HF dataset directory (first ``limit`` if > 0)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data not found: {p}")
    records = _hf_dataset_records(p) if p.is_dir() else _jsonl_records(p)
    examples: list[Example] = []
    for where, record in records:
        examples.append(example_from_record(record, where))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"{p}: the dataset is empty")
    return examples
