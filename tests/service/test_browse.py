"""Browsing an answer in real headless Chromium (issue 18): load more over one larger scan,
a facet filter kept in the URL, an example in its context, export of the shown results as
JSON and CSV, and the example queries of the empty page. Same server as test_browser.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
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
    assert page.locator("#k").input_value() == "10" and "k=10" in page.url  # says so
    assert not page.errors


def test_a_facet_filters_and_stays_in_the_url(server, page):
    ask(page, server, 40)
    # facets: keys whose values repeat; not act (always "I"), not play (the same partition as
    # title); speaker has 21 values: a text field with suggestions, not a 20-option select
    facets = page.locator("[data-facet]").evaluate_all("s => s.map(e => e.dataset.facet)")
    assert sorted(facets) == ["scene", "speaker", "title"], facets
    assert page.locator('input[data-facet="speaker"]').get_attribute("placeholder") == "any of 21"
    expect(page.locator("#facets")).to_contain_text("counts among the 44 fetched results")
    wraps = page.locator("#facets label.facet").evaluate_all(
        "ls => ls.map(l => getComputedStyle(l).whiteSpace)")  # fmt: skip
    assert set(wraps) == {"nowrap"}
    field = page.locator('input[data-facet="speaker"]')
    field.fill("S1")
    field.dispatch_event("change")
    expect(page.locator("ol.results li")).not_to_have_count(40)
    metas = page.locator("ol.results li .meta").all_inner_texts()
    assert metas and all("S1 " in m + " " for m in metas)
    assert "facet.speaker=S1" in page.url
    page.screenshot(path=ARTIFACTS / "browse-facet.png", full_page=True)
    page.goto(page.url)  # the filtered view's URL reloads to the same view
    expect(page.locator("ol.results li")).to_have_count(len(metas))
    assert page.locator('input[data-facet="speaker"]').input_value() == "S1"
    assert not page.errors


def test_an_example_in_its_context(server, page):
    """Its scene's speeches in speech_id order (the fixture's scenes interleave: example i is
    speech i // 4 of scene i % 4), not the neighbouring ids."""
    ask(page, server, 40)
    item = next(
        i for i in range(page.locator("ol.results li").count())
        if 8 <= int(page.locator("ol.results li").nth(i).get_attribute("data-example-id")) <= 31
    )  # fmt: skip
    row = page.locator("ol.results li").nth(item)
    example_id = int(row.get_attribute("data-example-id"))
    row.locator("a.explain").click()
    context = page.locator("#detail-context li")
    expect(context).to_have_count(5)
    ids = [int(x) for x in page.eval_on_selector_all(
        "#detail-context li", "ls => ls.map(l => l.dataset.exampleId)")]  # fmt: skip
    assert ids == [example_id + d for d in (-8, -4, 0, 4, 8)]
    expect(page.locator("#context-how")).to_contain_text("in their order there")
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
    path = Path(info.value.path())
    text = path.read_text(encoding="utf-8")
    opened = ARTIFACTS / f"export-{kind.lower()}.txt"  # as text: Chromium downloads a .csv
    opened.write_text(text, encoding="utf-8")
    page.goto(opened.resolve().as_uri())  # the export opened, for a human to look at
    page.screenshot(path=ARTIFACTS / f"browse-export-{kind.lower()}.png", full_page=True)
    full = {
        r["example_id"]: r["text"]
        for r in httpx.post(f"{server}/v1/attributions", json={"prompt": QUERY, "k": 100,
                            "full_text": True}).json()["proponents"]
    }  # fmt: skip
    if kind == "JSON":
        body = json.loads(text)
        prov = body["provenance"]
        assert prov["query"]["prompt"] == QUERY and body["facets"] == {"title": "Corpus"}
        assert prov["index_fingerprint"] and prov["index_version"] == 1 and prov["k"] == 6
        assert prov["preconditioner"] == "lowrank" and prov["damping"] == 0.1
        assert {"model", "normalize", "direction", "time", "lorif_version"} <= set(prov)
        assert [r["example_id"] for r in body["results"]] == ids
        assert all(r["meta"]["title"] == "Corpus" for r in body["results"])
        assert [r["text"] for r in body["results"]] == [full[i] for i in ids]  # not snippets
    else:
        head = [line for line in text.splitlines() if line.startswith("# ")]
        assert any(line.startswith("# index_fingerprint: ") for line in head)
        assert '# query: {"prompt":"' + QUERY + '"}' in head
        rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
        assert [int(r["example_id"]) for r in rows] == ids
        assert {"direction", "rank", "score", "speaker", "text"} <= set(rows[0])
        assert all(r["title"] == "Corpus" for r in rows)
        assert [r["text"] for r in rows] == [full[i] for i in ids]


def test_the_empty_page_offers_example_queries(server, page):
    """The index's own (stored beside it), never Shakespeare's for a model whose name says
    shakespeare."""
    page.goto(server)
    examples = page.locator("#examples li")
    expect(examples.first).to_be_visible()
    expect(page.locator("#examples")).to_contain_text("training example 0 itself")
    expect(examples.first).to_contain_text("the king and the queen. — a stored query")
    assert "shakespeare" in page.locator("#index-summary").inner_text()
    assert "To be, or not" not in page.locator("#examples").inner_text()
    assert page.locator("#prompt").get_attribute("placeholder").startswith("Type a line")
    page.screenshot(path=ARTIFACTS / "browse-empty.png", full_page=True)
    examples.last.locator("button").click()
    expect(page.locator("ol.results li")).to_have_count(10)
    assert page.locator("#prompt").input_value()
    expect(page.locator("#examples")).to_be_hidden()
    assert not page.errors


def test_scoring_controls_reach_the_api_and_the_url(server, page):
    page.goto(server)
    page.fill("#prompt", QUERY)
    page.locator("#options summary").click()
    page.fill("#damping", "0.5")
    page.select_option("#normalize", "unit")
    page.select_option("#direction", "opponents")
    page.click("#submit")
    expect(page.locator("ol.results li").first).to_be_visible()
    assert "damping=0.5" in page.url and "normalize=unit" in page.url
    body = {"prompt": QUERY, "k": 10, "damping": 0.5, "normalize": "unit",
            "direction": "opponents"}  # fmt: skip
    want = httpx.post(f"{server}/v1/attributions", json=body).json()["opponents"]
    got = shown(page)
    assert [i for i, _ in got] == [r["example_id"] for r in want]
    assert [s for _, s in got] == pytest.approx([r["score"] for r in want], rel=1e-3)
    plain = httpx.post(f"{server}/v1/attributions", json={**body, "normalize": "none"}).json()
    plain_scores = [r["score"] for r in plain["opponents"]]
    assert plain_scores != pytest.approx([s for _, s in got], rel=1e-3)  # the option mattered
    page.goto(page.url)  # the URL restores the controls
    expect(page.locator("ol.results li").first).to_be_visible()
    assert page.locator("#damping").input_value() == "0.5"
    assert page.locator("#normalize").input_value() == "unit"
    assert not page.errors


def test_histogram_totals_and_top_tokens(server, page):
    """Where the shown results sit among all N scores; influence summed by a key over all N
    (equal to the API's totals) and over the fetched results; each result's top tokens."""
    ask(page, server, 5)
    api = httpx.post(f"{server}/v1/attributions", json={"prompt": QUERY, "k": 100,
                     "totals_by": "title"}).json()  # fmt: skip
    h = api["score_histogram"]
    assert h["n"] == 44 == sum(h["counts"])
    marked = page.locator("#histogram .hist-bar.shown")
    expect(marked.first).to_be_visible()
    edges = h["edges"]
    bins = {int(b) for b in page.locator("#histogram .hist-bar.shown").evaluate_all(
        "bs => bs.map(b => b.dataset.bin)")}  # fmt: skip
    assert bins == {
        next(j for j in range(len(edges) - 1) if s < edges[j + 1]) for _, s in shown(page)
    }
    counted = page.locator("#histogram .hist-bar[data-bin]").evaluate_all(
        "bs => bs.map(b => +b.dataset.bin)")  # fmt: skip
    assert set(counted) == {
        j for j, n in enumerate(h["counts"]) if n
    } - {  # the bars: non-empty bins
        j for j in range(len(h["counts"])) if edges[j] < 0 < edges[j + 1]
    }
    chips = page.locator("ol.results li").first.locator(".top-tokens .chip")
    expect(chips.first).to_be_visible()
    assert 1 <= chips.count() <= 3
    # play is not offered: the same partition as title
    keys = page.locator("#totals-key option").evaluate_all("os => os.map(o => o.value)")
    assert keys == ["", "title", "speaker", "scene"], keys
    page.select_option("#totals-key", "title")
    expect(page.locator("table.totals tr[data-value]")).to_have_count(3)
    assert "totals=title" in page.url
    want = {e["value"]: e["sum"] for e in api["totals"]["highest"]}
    for value, total in want.items():
        cell = page.locator(f'table.totals tr[data-value="{value}"] td.num').first.inner_text()
        assert float(cell) == pytest.approx(total, rel=1e-3)
    assert sum(e["rows"] for e in api["totals"]["highest"]) == 44
    page.screenshot(path=ARTIFACTS / "browse-histogram-totals.png", full_page=True)
    assert not page.errors


def test_two_queries_side_by_side(server, page):
    other = "long live the queen."
    ask(page, server, 5)
    page.locator("#compare-form summary").click()
    page.fill("#vs-prompt", other)
    page.click("#vs-submit")
    expect(page.locator("#compare h2")).to_contain_text("of the top 5 proponents shared")
    assert "vs.prompt=" in page.url
    c = httpx.post(f"{server}/v1/compare", json={"a": {"prompt": QUERY}, "b": {"prompt": other},
                   "k": 5}).json()  # fmt: skip
    for section, key in (("#cmp-shared", "shared"), ("#cmp-a", "only_a"), ("#cmp-b", "only_b")):
        ids = page.locator(f"{section} li").evaluate_all("ls => ls.map(l => +l.dataset.exampleId)")
        assert ids == [r["example_id"] for r in c[key]]
    assert len(c["shared"]) + len(c["only_a"]) == 5 == len(c["shared"]) + len(c["only_b"])
    page.screenshot(path=ARTIFACTS / "browse-compare.png", full_page=True)
    page.goto(page.url)  # the comparison is in the URL
    expect(page.locator("#compare h2")).to_contain_text("shared")
    assert not page.errors


def test_summary_and_dialog_say_what_they_count(server, page):
    ask(page, server, 5)
    expect(page.locator("#index-summary")).to_contain_text("linear layers in 2 blocks")
    page.locator("ol.results li a.explain").first.click()
    expect(page.locator("#detail-score-note")).to_contain_text("rank-c factors")
    expect(page.locator("#detail-meta")).to_contain_text("score in the index")
