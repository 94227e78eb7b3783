"""Fixtures of the service tests. `reference`: the engine the HTTP results are checked
against. The browser tests (tests/service/browsing.py): one ``lorif serve`` and one
Chromium per test module (a Chromium kept open across modules holds an event loop that
later tests running asyncio.run() trip over)."""

from __future__ import annotations

import pytest

from indexer.build import build_index
from indexer.config import BuildConfig
from indexer.query import QueryEngine
from tests.conftest import small_config
from tests.helpers import lorif_serve, write_jsonl

from .browsing import ARTIFACTS, CHROMIUM, MALICIOUS, WAIT_MS, sync_playwright


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
