"""Fixtures of the service tests. `reference`: the engine the HTTP results are checked
against. The browser tests (tests/service/browsing.py): one ``lorif serve`` and one
Chromium per test module (a Chromium kept open across modules holds an event loop that
later tests running asyncio.run() trip over)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexer import ExampleQuery, write_example_queries
from indexer.build import build_index
from indexer.config import BuildConfig
from indexer.query import QueryEngine
from tests.conftest import small_config
from tests.helpers import lorif_serve, write_jsonl

from .browsing import ARTIFACTS, CHROMIUM, MALICIOUS, WAIT_MS, sync_playwright


@pytest.fixture(scope="session")
def grown(model_dirs, data_jsonl, tmp_path_factory):
    """(a sharded index of the first 40 rows with its verbatim table, the last 20 rows)."""
    root = tmp_path_factory.mktemp("live")
    rows = [json.loads(line) for line in data_jsonl.read_text().splitlines()]
    first = write_jsonl(root / "first.jsonl", rows[:40])
    index = build_index(small_config(model_dirs, first, root / "index", 16), progress=False)
    lorif("index", "verbatim", str(index))
    return index, write_jsonl(root / "more.jsonl", rows[40:]), rows[40:]


def lorif(*args: str) -> str:
    """The ``lorif`` CLI in a subprocess; its stdout (fails the test on a non-zero exit)."""
    exe = Path(sys.executable).parent / "lorif"
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def copy_of(grown, tmp_path: Path) -> Path:
    """A copy of the 40-row index of ``grown`` to serve and grow."""
    shutil.copytree(grown[0], tmp_path / "index")
    return tmp_path / "index"


@pytest.fixture(scope="module")
def reference(small_index):
    """The engine the service's answers must equal: one per test module, on CPU."""
    engine = QueryEngine.open(str(small_index), device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(model_dirs, corpus, tmp_path_factory):
    """One file, its model under a name that says "shakespeare" (the page must not offer
    Shakespeare queries for it: the index's own example queries come from beside it). Rows:
    4 scenes of 10 speeches, in speech_id order within each scene (not in id order); 20
    speakers; `play` the same partition as `title`."""
    root = tmp_path_factory.mktemp("browser")
    model = shutil.copytree(model_dirs["llama"], root / "shakespeare-like-model")
    rows = [
        {"text": t, "title": "Corpus", "play": "corpus", "speaker": f"S{i % 20}", "act": "I",
         "scene": str(i % 4), "speech_id": i // 4}
        for i, t in enumerate(corpus[:40])
    ]  # fmt: skip
    rows += [
        {"text": t, "title": "Malice <b>", "play": "malice <b>", "speaker": "<i>VILLAIN</i>"}
        for t in MALICIOUS
    ]
    rows.append({"text": "so said one two three four five, and left.", "title": "Quote",
                 "play": "quote"})  # fmt: skip
    data = write_jsonl(root / "train.jsonl", rows)
    index = root / "browse.h5"
    config = small_config({"llama": model}, data, index, BuildConfig.shard_size)
    build_index(config, progress=False)
    write_example_queries(index, [ExampleQuery("the king and the queen.", "", "a stored query")])
    with lorif_serve(index, env={"LORIF_MAX_WAIT_MS": "5"}) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.dialogs = []  # any alert()/confirm() would mean injected code ran
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()
