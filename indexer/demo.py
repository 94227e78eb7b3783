"""The demo: Shakespeare's speeches, the model trained on them, a LoRIF index, and queries.

``lorif demo`` builds the index of all ~30k speeches once (about 15 minutes on 2 CPU cores,
progress bars shown; an interrupted build resumes) and reuses it afterwards; ``--quick`` indexes
every 15th speech (~2,000, about a minute).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

QUICK_STRIDE = 15
DEMO_QUERIES = [
    ("", "To be, or not to be: that is the question."),
    ("", "O Romeo, Romeo! wherefore art thou Romeo?"),
    ("Speak, what news from the field? ", "The king is slain, and all his army fled."),
]


def demo_settings() -> dict:
    """Index settings of the demo (see README: sizes and build time)."""
    return {"model": "shakespeare-llama", "proj_factor": 8, "rank": 1, "curvature_rank": 256,
            "max_tokens": 256, "batch_size": 16, "seed": 0}


def write_corpus(path: Path, quick: bool) -> int:
    """Speeches as jsonl (metadata: play, title, act, scene, speaker, split)."""
    from .corpora.shakespeare import load_speeches
    from .corpora.splits import split_of

    records = load_speeches()
    rows = [{**r, "speech_id": i, "split": split_of(i)} for i, r in enumerate(records)
            if not quick or i % QUICK_STRIDE == 0]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    tmp.replace(path)
    return len(rows)


def ensure_demo_index(workdir: str | Path, quick: bool = False, progress: bool = True) -> Path:
    """Build the demo index if missing (resuming a partial build); return its path."""
    from .build import build_index
    from .config import BuildConfig

    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    name = "shakespeare-quick" if quick else "shakespeare"
    data, index = root / f"{name}.jsonl", root / f"{name}.h5"
    if index.exists():
        return index
    if not data.exists():
        n = write_corpus(data, quick)
        typer.echo(f"corpus: {n} speeches -> {data}")
    typer.echo(f"building {index} (first run only; an interrupted build resumes) ...")
    build_index(BuildConfig(data=str(data), output=str(index), **demo_settings()),
                progress=progress)
    return index


def run_demo(workdir: str, k: int = 5, quick: bool = False) -> None:
    from .data import Example
    from .query import QueryEngine, top_rows

    index = ensure_demo_index(workdir, quick)
    engine = QueryEngine.open(str(index), device="auto")
    try:
        typer.echo(f"index {index}: {len(engine.index)} speeches, model "
                   f"{engine.index.manifest['model']['spec']}")
        for prompt, completion in DEMO_QUERIES:
            result = engine.score([Example(prompt=prompt, completion=completion)], k=k,
                                  keep_scores=False)
            shown = f"{prompt!r} -> {completion!r}" if prompt else repr(completion)
            typer.echo(f"\nquery: {shown}\nmost influential training speeches:")
            for rank, (i, s) in enumerate(top_rows(result, 0), 1):
                ex = engine.index.example(i)
                where = (f"{ex.meta.get('title')} {ex.meta.get('act')}.{ex.meta.get('scene')}, "
                         f"{ex.meta.get('speaker')}")
                text = " ".join(ex.text.split())
                typer.echo(f"  {rank}. {s:+10.3f}  [{where}] "
                           f"{text[:110] + '…' if len(text) > 110 else text}")
    finally:
        engine.close()
