"""Browsing an answer in real headless Chromium (issue 18): load more over one larger scan,
a facet filter kept in the URL, an example in its context, export of the shown results as
JSON and CSV, and the example queries of the empty page. Same server as test_browser.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from .browsing import ARTIFACTS, QUERY, api_top, expect, pytestmark, shown  # noqa: F401


def ask(page, server, k=5, extra=""):
    page.goto(f"{server}/?prompt={QUERY}&k={k}{extra}")
    expect(page.locator("ol.results li").first).to_be_visible()


def test_load_more_pages_one_scan(server, page):
    ask(page, server, 5)
    expect(page.locator("ol.results li")).to_have_count(5)
    page.click("#load-more")
    expect(page.locator("ol.results li")).to_have_count(10)
    want = api_top(server, {"prompt": QUERY, "k": 10})
    assert [i for i, _ in shown(page)] == [i for i, _ in want]
    assert not page.errors


def test_a_facet_filters_and_stays_in_the_url(server, page):
    ask(page, server, 40)
    # facets: keys whose values repeat; not scene (one per example) nor act (always "I")
    facets = page.locator("select[data-facet]").evaluate_all("s => s.map(e => e.dataset.facet)")
    assert set(facets) == {"title", "speaker"}, facets
    select = page.locator('select[data-facet="speaker"]')
    select.select_option("S1")
    expect(page.locator("ol.results li")).not_to_have_count(40)
    metas = page.locator("ol.results li .meta").all_inner_texts()
    assert metas and all("S1" in m for m in metas)
    assert "facet.speaker=S1" in page.url
    page.screenshot(path=ARTIFACTS / "browse-facet.png", full_page=True)
    page.goto(page.url)  # the filtered view's URL reloads to the same view
    expect(page.locator("ol.results li")).to_have_count(len(metas))
    assert page.locator('select[data-facet="speaker"]').input_value() == "S1"
    assert not page.errors


def test_an_example_in_its_context(server, page):
    ask(page, server, 40)
    item = next(
        i for i in range(page.locator("ol.results li").count())
        if 2 <= int(page.locator("ol.results li").nth(i).get_attribute("data-example-id")) <= 38
    )  # fmt: skip
    row = page.locator("ol.results li").nth(item)
    example_id = int(row.get_attribute("data-example-id"))
    row.locator("a.explain").click()
    context = page.locator("#detail-context li")
    expect(context).to_have_count(5)
    ids = [int(x) for x in page.eval_on_selector_all(
        "#detail-context li", "ls => ls.map(l => l.dataset.exampleId)")]  # fmt: skip
    assert ids == list(range(example_id - 2, example_id + 3))
    current = page.locator("#detail-context li[aria-current]")
    assert current.get_attribute("data-example-id") == str(example_id)
    page.screenshot(path=ARTIFACTS / "browse-context.png", full_page=True)


@pytest.mark.parametrize("kind", ["JSON", "CSV"])
def test_export_holds_the_shown_results(server, page, kind):
    ask(page, server, 6)
    page.locator('select[data-facet="title"]').select_option("Corpus")
    expect(page.locator("ol.results li")).to_have_count(6)
    ids = [i for i, _ in shown(page)]
    with page.expect_download() as info:
        page.click(f"#export button:has-text('Export {kind}')")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    if kind == "JSON":
        body = json.loads(text)
        assert body["query"]["prompt"] == QUERY and body["facets"] == {"title": "Corpus"}
        assert [r["example_id"] for r in body["results"]] == ids
        assert all(r["meta"]["title"] == "Corpus" for r in body["results"])
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [int(r["example_id"]) for r in rows] == ids
        assert {"direction", "rank", "score", "speaker", "snippet"} <= set(rows[0])
        assert all(r["title"] == "Corpus" for r in rows)


def test_the_empty_page_offers_example_queries(server, page):
    page.goto(server)
    examples = page.locator("#examples li")
    expect(examples.first).to_be_visible()
    expect(page.locator("#examples")).to_contain_text("training example 0 itself")
    assert page.locator("#prompt").get_attribute("placeholder").startswith("Type a line")
    page.screenshot(path=ARTIFACTS / "browse-empty.png", full_page=True)
    examples.last.locator("button").click()
    expect(page.locator("ol.results li")).to_have_count(10)
    assert page.locator("#prompt").input_value()
    expect(page.locator("#examples")).to_be_hidden()
    assert not page.errors
