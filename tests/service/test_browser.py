"""The browse page in real headless Chromium against a real ``lorif serve`` (browsing.py):
results, the detail view, shared URLs, inert malicious examples, messages, narrow windows, the
API docs, the verbatim panel."""

from __future__ import annotations

import httpx
import pytest

from .browsing import ARTIFACTS, QUERY, api_top, expect, pytestmark, shown  # noqa: F401


def test_query_results_detail_and_shared_url(server, page):
    page.goto(server)
    expect(page.locator("#index-summary")).to_contain_text("44 training examples")
    page.keyboard.press("Tab")  # keyboard only: focus the prompt, type, Ctrl+Enter
    expect(page.locator("#prompt")).to_be_focused()
    page.keyboard.type(QUERY)
    page.fill("#k", "7")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")
    expect(page.locator("ol.results li")).to_have_count(7)
    got = shown(page)
    want = api_top(server, {"prompt": QUERY, "k": 7})
    assert [i for i, _ in got] == [i for i, _ in want]  # rank order of the API
    for (_, a), (_, b) in zip(got, want, strict=False):
        assert a == pytest.approx(b, rel=1e-3)  # 4 significant digits shown
    ranks = page.locator("ol.results li .rank").all_inner_texts()
    assert ranks == [f"#{i}" for i in range(1, 8)]
    widths = page.eval_on_selector_all(".bar", "bs => bs.map(b => b.getBoundingClientRect().width)")
    assert widths[0] == max(widths) and widths[0] > 0
    assert "prompt=" in page.url and "k=7" in page.url
    page.screenshot(path=ARTIFACTS / "browse-results.png", full_page=True)

    page.locator("a.explain").first.click()  # the detail view with token highlights
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    expect(page.locator("#detail-tokens .tok").first).to_be_visible()
    contributions = [
        float(x)
        for x in page.eval_on_selector_all(
            "#detail-tokens .tok", "ts => ts.map(t => t.dataset.contribution)"
        )
    ]
    assert len(contributions) > 2 and any(c > 0 for c in contributions)
    assert sum(contributions) == pytest.approx(got[0][1], rel=2e-2)  # the split adds up
    assert page.locator("#query-tokens .tok").count() > 2
    assert f"example={got[0][0]}" in page.url
    page.screenshot(path=ARTIFACTS / "browse-detail.png", full_page=True)

    shared = page.url  # reload the shared URL: same results, detail open again
    page.goto("about:blank")
    page.goto(shared)
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("ol.results li")).to_have_count(7)
    assert [i for i, _ in shown(page)] == [i for i, _ in got]
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert "example=" not in page.url
    assert not page.errors and not page.dialogs


def test_malicious_examples_render_inert(server, page):
    page.goto(f"{server}/?prompt={QUERY}&k=44&direction=proponents")
    expect(page.locator("ol.results li")).to_have_count(44)
    text = page.locator("#results").inner_text()
    for needle in [
        "<script>window.__pwned",
        "<img src=x onerror=",
        "&amp; chips &lt;b&gt;",
        "Malice <b>",
        "<i>VILLAIN</i>",
    ]:
        assert needle in text  # shown literally, as text
    assert page.locator("#results script, #results img, #results b, #results i").count() == 0
    bad = page.locator("ol.results li", has_text="<script>")
    bad.locator("a.explain").click()
    expect(page.locator("#detail-tokens .tok").first).to_be_visible()
    assert "script" in page.locator("#detail-tokens").inner_text()
    assert page.locator("#detail script, #detail img").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert not page.dialogs and not page.errors
    page.screenshot(path=ARTIFACTS / "browse-malicious.png", full_page=True)


def test_busy_and_validation_messages(server, page):
    # one 429 from the API (injected for this single response; the service's own 429 is tested
    # in test_service.py), then the real answer: the page says it is busy and retries
    calls = []

    def once_busy(route):
        calls.append(1)
        if len(calls) == 1:
            route.fulfill(
                status=429,
                headers={"Retry-After": "2", "content-type": "application/problem+json"},
                body='{"title": "Too many requests", "status": 429, '
                '"detail": "the scoring queue is full; retry in 2 s"}',
            )
        else:
            route.continue_()

    page.route("**/v1/attributions", once_busy)
    page.goto(server)
    page.fill("#prompt", QUERY)
    page.click("#submit")
    expect(page.locator("#status")).to_contain_text("busy")
    expect(page.locator("#status")).to_contain_text("retrying in")
    page.screenshot(path=ARTIFACTS / "browse-busy.png")
    expect(page.locator("ol.results li")).to_have_count(10)
    assert len(calls) == 2
    page.unroute("**/v1/attributions")

    long_prompt = " ".join(["king"] * 3000)  # over the token cap: the API's 422, in words
    page.fill("#prompt", long_prompt)
    page.click("#submit")
    expect(page.locator("#status")).to_contain_text("tokens")
    expect(page.locator("#status.error")).to_be_visible()


def test_narrow_window(server, browser):
    context = browser.new_context(viewport={"width": 380, "height": 800})
    page = context.new_page()
    page.goto(f"{server}/?prompt={QUERY}&k=5&direction=both")
    expect(page.locator("ol.results li")).to_have_count(10)
    overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    lefts = page.locator("ol.results li").first.evaluate(
        "li => [...li.children].map(c => c.getBoundingClientRect().left)")  # fmt: skip
    page.screenshot(path=ARTIFACTS / "browse-narrow.png", full_page=True)
    context.close()
    assert not overflow
    assert max(lefts) - min(lefts) < 2, lefts  # one column: rank, score, meta, text, tokens


def test_api_docs_render_offline_under_their_csp(server, page):
    """Swagger UI from the swagger-ui-bundle package: it renders, loads nothing from another
    origin, and the page's CSP blocks nothing it needs."""
    foreign, blocked = [], []
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(server) else None)
    page.on(
        "console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.goto(f"{server}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("LoRIF attribution service")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "docs.png"))
    assert foreign == [] and blocked == [] and page.errors == []


def test_verbatim_panel(server, page):
    quote = "one two three four five"  # the last example (added for this test), in other case
    body = httpx.post(f"{server}/v1/attributions", json={"prompt": quote.upper(), "k": 5}).json()
    assert body["verbatim"][0]["words"] == 5
    page.goto(f"{server}/?prompt={quote.upper()}&k=5")
    panel = page.locator("#verbatim")
    expect(panel).to_contain_text("Verbatim matches")
    expect(panel.locator("li").first).to_contain_text("5 w")
    assert panel.locator("li mark").first.inner_text().lower() == quote
    assert body["verbatim"][0]["example_id"] == int(
        panel.locator("li").first.get_attribute("data-example-id")
    )
    expect(page.locator("ol.results li")).to_have_count(5)  # influence, listed apart
    panel.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "browse-verbatim.png", full_page=True)
    page.goto(f"{server}/?prompt=zebra%20quantum%20xylophone%20marmalade&k=3")
    expect(page.locator("#verbatim")).to_contain_text("No training example contains")
    assert not page.errors


def test_a_growing_index_is_shown_growing_and_followed(grown, tmp_path, page):
    """A build that publishes as it goes: the page says "indexed N of M … growing" and
    updates as the server follows the index (here: `lorif index add` of the last 20 rows)."""
    import json

    from tests.helpers import lorif_serve

    from .conftest import copy_of, lorif

    index = copy_of(grown, tmp_path)
    (index / "growing.json").write_text(json.dumps({"target_rows": 60}))
    with lorif_serve(index, env={"LORIF_WATCH_S": "0.5", "LORIF_SCORER": "thread"}) as (url, _):
        page.goto(url)
        summary = page.locator("#index-summary")
        expect(summary).to_contain_text("indexed 40 of 60 training examples — growing")
        page.screenshot(path=ARTIFACTS / "browse-growing.png")
        lorif("index", "add", str(index), "--data", str(grown[1]), "--device", "cpu")
        (index / "growing.json").unlink()
        expect(summary).to_contain_text("60 training examples ·")
        expect(summary).not_to_contain_text("growing")
        page.screenshot(path=ARTIFACTS / "browse-grown.png")
        assert not page.errors
