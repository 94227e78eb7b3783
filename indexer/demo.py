"""The quick demo: a tiny LM trained here on an embedded fact corpus, indexed, then queried.

Everything is built locally in a few seconds (no download), and reused on the next run. The
Shakespeare demo with a real trained model replaces this as the default in a later release.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

CAPITALS = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Peru", "Lima"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Chile", "Santiago"),
            ("Norway", "Oslo"), ("Greece", "Athens"), ("Cuba", "Havana"), ("Nepal", "Kathmandu")]
SOUNDS = [("dog", "barks"), ("cat", "meows"), ("cow", "moos"), ("lion", "roars"),
          ("owl", "hoots"), ("duck", "quacks"), ("horse", "neighs"), ("snake", "hisses")]
COLOURS = [("grass", "green"), ("sky", "blue"), ("snow", "white"), ("coal", "black"),
           ("blood", "red"), ("sun", "yellow"), ("night", "dark"), ("milk", "white")]


def fact_corpus() -> list[dict[str, str]]:
    rows = []
    for country, city in CAPITALS:
        rows.append({"text": f"The capital of {country} is {city}.", "topic": "capitals"})
        rows.append({"text": f"{city} is a large city in {country}.", "topic": "cities"})
    for animal, sound in SOUNDS:
        rows.append({"text": f"The {animal} {sound} at night.", "topic": "animals"})
        rows.append({"text": f"Every {animal} {sound} when it is hungry.", "topic": "animals"})
    for thing, colour in COLOURS:
        rows.append({"text": f"The colour of {thing} is {colour}.", "topic": "colours"})
    return rows


def run_demo(workdir: str, k: int = 5) -> None:
    from .build import build_index
    from .config import BuildConfig
    from .data import Example
    from .query import QueryEngine, top_rows
    from .toy import save_lm, tiny_lm, train_lm, train_tokenizer

    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    data, model_dir, index = root / "facts.jsonl", root / "model", root / "facts.h5"
    rows = fact_corpus()
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not (model_dir / "config.json").exists():
        typer.echo(f"training a tiny Llama on {len(rows)} sentences ...")
        texts = [r["text"] for r in rows]
        tok = train_tokenizer(texts, vocab_size=400)
        model = tiny_lm("llama", len(tok), hidden=64, layers=2, heads=4, seed=0)
        # Lightly trained on purpose: once every sentence is memorised its training gradients
        # shrink to noise and no gradient-based attribution can tell them apart.
        losses = train_lm(model, tok, texts, steps=60, batch_size=16, lr=3e-3)
        typer.echo(f"  loss {losses[0]:.2f} -> {sum(losses[-20:]) / 20:.2f}")
        save_lm(model, tok, model_dir)
    if not index.exists():
        build_index(BuildConfig(model=str(model_dir), data=str(data), output=str(index),
                                proj_factor=2, rank=2, curvature_rank=16, batch_size=16))
    engine = QueryEngine.open(str(index), device="cpu")
    try:
        for prompt, completion in (("The capital of France is", " Paris."),
                                   ("The dog", " barks at night.")):
            result = engine.score([Example(prompt=prompt, completion=completion)], k=k,
                                  keep_scores=False)
            typer.echo(f"\nquery: {prompt!r} -> {completion!r}   (index {index})")
            for rank, (i, s) in enumerate(top_rows(result, 0), 1):
                typer.echo(f"  {rank}. {s:+9.3f}  {engine.index.example(i).text}")
    finally:
        engine.close()
