"""The demo: Shakespeare's speeches, the model trained on them, a LoRIF index, and queries.

``lorif demo`` indexes a spread over every play first (the quick subset, under a minute),
answers and serves it, and adds the rest of the 30,526 speeches while it serves
(lorif_demo/growing.py; an interrupted build resumes); ``--quick`` indexes
every 15th speech and the speeches the demo queries quote (2,038, one to two
minutes). Settings: the ``shakespeare-demo`` preset of
:class:`indexer.config.BuildConfig`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

QUICK_STRIDE = 15
SOURCE_WORDS = 6
DEMO_QUERIES = [
    ("", "To be, or not to be: that is the question."),
    ("", "O Romeo, Romeo! wherefore art thou Romeo?"),
    ("Speak, what news from the field? ", "The king is slain, and all his army fled."),
]


def write_corpus(
    path: str | Path, quick: bool = False, source: str | None = None, version: int = 0
) -> int:
    """Speeches as jsonl (metadata: play, title, act, scene, speaker, speech_id, split),
    written atomically; returns the count. ``version``: the parser's (0: the current one)."""
    from .corpora.shakespeare import PARSER_VERSION, load_speeches
    from .corpora.splits import split_of

    path = Path(path)
    records = load_speeches(source, version=version or PARSER_VERSION)
    sources = demo_sources([r["text"] for r in records]) if quick else set()
    rows = [
        {**r, "speech_id": i, "split": r.get("split") or split_of(i)}
        for i, r in enumerate(records)
        if not quick or i % QUICK_STRIDE == 0 or i in sources
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    tmp.replace(path)
    return len(rows)


def demo_sources(texts: list[str]) -> set[int]:
    """The speeches a demo query quotes: those holding ``SOURCE_WORDS`` or more of its words in
    a row (the quick subset keeps them, so its verbatim panel finds them)."""
    speeches = [" " + " ".join(_words(t)) + " " for t in texts]
    found: set[int] = set()
    for prompt, completion in DEMO_QUERIES:
        q = _words(prompt + completion)
        runs = {
            " " + " ".join(q[s : s + SOURCE_WORDS]) + " " for s in range(len(q) - SOURCE_WORDS + 1)
        }
        found |= {i for i, t in enumerate(speeches) if any(r in t for r in runs)}
    return found


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"\w+", text)]


def ensure_demo_index(workdir: str | Path, quick: bool = False, progress: bool = True) -> Path:
    """The demo index, built if missing (resuming a partial build); return its path. The full
    demo's first build is stage 0 of a growing index (lorif_demo/growing.py): `lorif demo`
    grows it while it serves."""
    from indexer.build import build_index
    from indexer.config import BuildConfig

    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    name = "shakespeare-quick" if quick else "shakespeare"
    data, index = root / f"{name}.jsonl", root / name
    if (index / "manifest.json").exists():
        return with_example_queries(index)
    if root.joinpath(f"{name}.h5").exists():  # built by an earlier version: one file
        return root / f"{name}.h5"
    if not data.exists():
        n = write_corpus(data, quick)
        typer.echo(f"corpus: {n} speeches -> {data}")
    first = data if quick else demo_stages(root)[0]
    what = "" if quick else " (a spread over every play first; the rest is added as it serves)"
    typer.echo(f"building {index}{what} (an interrupted build resumes) ...")
    preset = BuildConfig.preset("shakespeare-demo", data=str(first), output=str(index))
    build_index(preset, progress=progress)
    if not quick:
        from .growing import mark_growing

        mark_growing(index, demo_stages(root))
    return with_example_queries(index)


NOTES = [
    "a famous line: its influences and, below them, its verbatim source (not the same thing)",
    "filter the results by play or speaker; sum the influence per play (Scoring options)",
    "prompt + completion: only the completion's tokens count",
]


def with_example_queries(index: Path) -> Path:
    """The demo queries stored beside the index: what its empty page offers."""
    from indexer import ExampleQuery, write_example_queries
    from indexer.storage.metadata import example_queries_path

    if not example_queries_path(index).exists():
        queries = [ExampleQuery(p, c, n) for (p, c), n in zip(DEMO_QUERIES, NOTES, strict=True)]
        write_example_queries(index, queries)
    return index


def demo_stages(root: Path) -> list[Path]:
    """The full demo's stage files (lorif_demo/growing.py): the quick subset first."""
    from .growing import write_stages

    lines = (root / "shakespeare.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    sources = demo_sources([r["text"] for r in rows])
    first = {i for i in range(len(rows)) if i % QUICK_STRIDE == 0 or i in sources}
    return write_stages(rows, first, root / "shakespeare.stages")


def run_demo(workdir: str, k: int = 5, quick: bool = False) -> None:
    from indexer.data import Example
    from indexer.query import QueryEngine, top_rows

    index = ensure_demo_index(workdir, quick)
    engine = QueryEngine.open(str(index), device="auto")
    verbatim = _verbatim_table(engine.index)
    try:
        typer.echo(
            f"index {index}: {len(engine.index)} speeches, model "
            f"{engine.index.manifest.model_summary()['spec']}"
        )
        for prompt, completion in DEMO_QUERIES:
            result = engine.score(
                [Example(prompt=prompt, completion=completion)], k=k, keep_scores=False
            )
            shown = f"{prompt!r} -> {completion!r}" if prompt else repr(completion)
            typer.echo(f"\nquery: {shown}\nmost influential training speeches:")
            top = top_rows(result, 0)
            examples = engine.index.examples_at([i for i, _ in top])
            for rank, ((_, s), ex) in enumerate(zip(top, examples, strict=True), 1):
                where = (
                    f"{ex.meta.get('title')} {ex.meta.get('act')}.{ex.meta.get('scene')}, "
                    f"{ex.meta.get('speaker')}"
                )
                text = " ".join(ex.text.split())
                typer.echo(
                    f"  {rank}. {s:+10.3f}  [{where}] "
                    f"{text[:110] + '…' if len(text) > 110 else text}"
                )
            if verbatim is not None:
                _echo_verbatim(verbatim, engine.index, prompt + completion)
    finally:
        engine.close()
        if verbatim is not None:
            verbatim.close()


def _verbatim_table(index: Any) -> Any:
    from indexer import IndexFormatError, VerbatimIndex, build_verbatim

    try:
        return VerbatimIndex.open_for(index)
    except IndexFormatError:  # an index built before the table existed
        build_verbatim(index)
        return VerbatimIndex.open_for(index)


def _echo_verbatim(table: Any, index: Any, text: str) -> None:
    """Where the query's words occur verbatim: evidence of another kind than influence."""
    found = table.search(text, 3)
    if not found:
        typer.echo("the query's words (4 or more in a row) occur verbatim in no speech")
        return
    typer.echo("verbatim (text search, not influence) — speeches holding the query's words:")
    for m, ex in zip(found, index.examples_at([m.example_id for m in found]), strict=True):
        typer.echo(
            f"  {m.words:2d} words  [{ex.meta.get('title')} {ex.meta.get('act')}."
            f"{ex.meta.get('scene')}, {ex.meta.get('speaker')}] “{m.text}”"
        )
