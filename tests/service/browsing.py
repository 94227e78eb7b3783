"""The browser tests' shared parts: headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) against a real ``lorif serve`` on a small index that also holds malicious examples
and one quotation; its fixtures are in conftest.py (one server for every browser test module).

Screenshots go to ``$LORIF_ARTIFACTS`` (default ``.ci-artifacts/``) for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("LORIF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_BROWSER = Path(CHROMIUM).exists()
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        (not HAVE_BROWSER or sync_playwright is None) and os.environ.get("CI") != "true",
        reason="needs Debian chromium and playwright (scripts/setup.sh installs both)",
    ),
]

ARTIFACTS = Path(os.environ.get("LORIF_ARTIFACTS", ".ci-artifacts"))
# Waits sized for a loaded 2-core machine (Playwright's 5 s default timed out there); a wait
# that succeeds returns as soon as its condition holds, so a fast machine loses nothing.
WAIT_MS = 30_000
if sync_playwright is not None:
    expect.set_options(timeout=WAIT_MS)
MALICIOUS = [
    '<script>window.__pwned = "script"</script> the king is dead.',
    "<img src=x onerror=\"window.__pwned = 'img'\"> long live the queen.",
    'fish &amp; chips &lt;b&gt;bold&lt;/b&gt; "quoted" the sea.',
]
QUERY = "the king and the queen."


def api_top(url: str, body: dict) -> list[tuple[int, float]]:
    r = httpx.post(f"{url}/v1/attributions", json=body).json()
    return [(x["example_id"], x["score"]) for x in r["proponents"]]


def shown(page) -> list[tuple[int, float]]:
    items = page.locator("ol.results li")
    return [
        (
            int(items.nth(i).get_attribute("data-example-id")),
            float(items.nth(i).locator(".score").inner_text()),
        )
        for i in range(items.count())
    ]
