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
    root = tmp_path_factory.mktemp("browser")
    rows = [
        {"text": t, "title": "Corpus", "speaker": f"S{i % 4}", "act": "I", "scene": str(i)}
        for i, t in enumerate(corpus[:40])
    ]
    rows += [{"text": t, "title": "Malice <b>", "speaker": "<i>VILLAIN</i>"} for t in MALICIOUS]
    rows.append({"text": "so said one two three four five, and left.", "title": "Quote"})
    data = write_jsonl(root / "train.jsonl", rows)
    index = root / "browse.h5"
    build_index(small_config(model_dirs, data, index, BuildConfig.shard_size), progress=False)
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
