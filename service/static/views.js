// Views over all N scores and beyond one list (loaded after app.js and browse.js, whose helpers
// it uses): where the shown results sit in the histogram of every score, influence summed by a
// metadata key (over all N and over the fetched results), the top tokens of each shown
// result, and two queries side by side. Everything is rendered with textContent.
"use strict";

const HIGHLIGHTED = 10; // shown results whose top tokens are fetched (one explanation each)
const TOP_TOKENS = 3;

function binOf(edges, s) {
  for (let j = 0; j < edges.length - 1; j++) if (s < edges[j + 1]) return j;
  return edges.length - 2;
}

// Bars on a log scale of counts over signed-log bins of score; the bins holding shown results
// are marked (their tails are where the top-k live: a count of 1 among N).
function renderHistogram(h, shown) {
  const box = el("figure", { id: "histogram", "aria-label": "Where the shown results sit among all scores" });
  const marked = new Map();
  for (const r of shown) {
    const j = binOf(h.edges, r.score);
    marked.set(j, (marked.get(j) || 0) + 1);
  }
  const top = Math.log10(1 + Math.max(...h.counts, 1));
  const bars = el("div", { class: "hist-bars" });
  let empty = 0; // a run of empty bins shows as one gap
  const flush = () => {
    if (empty >= 3) bars.append(el("span", { class: "hist-gap", title: `${empty} empty bins` }, "⋯"));
    else for (let i = 0; i < empty; i++) bars.append(el("span", { class: "hist-bar" }));
    empty = 0;
  };
  h.counts.forEach((n, j) => {
    if (h.edges[j] < 0 && h.edges[j + 1] > 0) { // |score| < 1e-12: where the sign changes
      flush();
      const zero = el("span", { class: "hist-zero", title: `${n.toLocaleString()} scores within 1e-12 of 0` });
      zero.append(el("span", {}, "0"));
      bars.append(zero);
      return;
    }
    if (!n && !marked.has(j)) { empty++; return; }
    flush();
    const bar = el("span", { class: "hist-bar" + (marked.has(j) ? " shown" : ""), "data-bin": String(j) });
    bar.style.height = `${n ? Math.max(4, (100 * Math.log10(1 + n)) / top) : 0}%`;
    bar.title = `${n.toLocaleString()} examples score in [${h.edges[j].toPrecision(2)}, ${h.edges[j + 1].toPrecision(2)})` +
      (marked.has(j) ? `; ${marked.get(j)} of them shown` : "");
    bars.append(bar);
  });
  flush();
  const axis = el("div", { class: "hist-axis muted" });
  axis.append(el("span", {}, signedScore(h.edges[0], 2)), el("span", {}, signedScore(h.edges[h.edges.length - 1], 2)));
  box.append(bars, axis, el("figcaption", { class: "muted" },
    `All ${h.n.toLocaleString()} scores (signed log bins, log counts); the marked bins hold the ` +
    `${shown.length} shown results.`));
  return box;
}

// Influence summed per value of a metadata key: over all N (the scan's totals, when asked)
// and over the fetched results; a select picks the key (a new scan, its answer cached).
function renderTotals(q, body) {
  const box = el("section", { id: "totals", "aria-label": "Influence summed by a metadata key" });
  const keys = [...new Set([...(q.totals ? [q.totals] : []), ...facetValues(body).map(([k]) => k)])];
  const select = el("select", { id: "totals-key", "aria-label": "Sum influence by" });
  select.append(el("option", { value: "" }, "choose a key"));
  for (const k of keys) select.append(el("option", { value: k }, k));
  select.value = q.totals || "";
  select.addEventListener("change", () => {
    const next = { ...q, totals: select.value };
    $("totals").value = select.value;
    runQuery(next, true);
  });
  const head = el("div", { class: "row" });
  head.append(el("h2", {}, "Influence summed by"), select);
  box.append(head);
  const t = body.totals;
  if (!t) return box;
  const fetched = new Map();
  for (const r of fetchedRows(body)) {
    const v = (r.meta || {})[t.key];
    const key = v === undefined || v === null ? "" : typeof v === "string" ? v : JSON.stringify(v);
    fetched.set(key, (fetched.get(key) || 0) + r.score);
  }
  const entries = [...t.highest, ...t.lowest];
  const scale = Math.max(1e-30, ...entries.map((e) => Math.abs(e.sum)));
  const table = el("table", { class: "totals" });
  const hr = el("tr");
  for (const h of [t.key, `sum over all ${t.rows.toLocaleString()}`, "", "examples",
    `sum over the ${fetchedCount(body)} fetched`]) hr.append(el("th", {}, h));
  table.append(hr);
  const row = (e) => {
    const tr = el("tr", { "data-value": e.value });
    const track = el("span", { class: "bar-track" });
    const bar = el("span", { class: "bar " + (e.sum >= 0 ? "pos" : "neg") });
    bar.style.display = "block";
    bar.style.width = `${Math.max(1, (100 * Math.abs(e.sum)) / scale)}%`;
    track.append(bar);
    const cells = [el("td", {}, e.value || "(none)"), el("td", { class: "num" }, signedScore(e.sum, 4)),
      el("td", { class: "chart" }), el("td", { class: "num" }, e.rows.toLocaleString()),
      el("td", { class: "num" }, fetched.has(e.value) ? signedScore(fetched.get(e.value), 4) : "—")];
    cells[2].append(track);
    tr.append(...cells);
    return tr;
  };
  t.highest.forEach((e) => table.append(row(e)));
  if (t.lowest.length) {
    const gap = el("tr");
    gap.append(el("td", { colspan: "5", class: "muted" }, `… ${t.groups - t.highest.length - t.lowest.length} values between …`));
    table.append(gap);
    t.lowest.forEach((e) => table.append(row(e)));
  }
  box.append(table);
  return box;
}

// The top contributing tokens of each shown result (POST /v1/explanations, one at a time
// after the list is on screen; a newer query stops them).
async function highlightTokens(q, out) {
  const gen = generation;
  const items = [...out.querySelectorAll("ol.results li")].slice(0, HIGHLIGHTED);
  for (const li of items) {
    if (gen !== generation) return;
    const target = li.querySelector(".top-tokens");
    const body = { prompt: q.prompt, example_id: Number(li.dataset.exampleId), ...scoringOptions(q) };
    delete body.normalize;
    if (q.completion) body.completion = q.completion;
    try {
      const expl = await api("/v1/explanations", { method: "POST", body: JSON.stringify(body) }, target, gen);
      if (gen !== generation) return;
      const sign = li.closest("section").dataset.direction === "opponents" ? -1 : 1;
      const best = expl.example_tokens.filter((t) => t.text.trim())
        .sort((a, b) => sign * (b.contribution - a.contribution)).slice(0, TOP_TOKENS);
      target.replaceChildren("top tokens: ");
      for (const t of best) {
        const chip = el("span", { class: "tok chip", title: `${signedScore(t.contribution)} of the score` }, t.text);
        chip.style.backgroundColor = `rgba(${t.contribution >= 0 ? "var(--pos)" : "var(--neg)"}, .25)`;
        chip.dataset.contribution = String(t.contribution);
        target.append(chip, " ");
      }
    } catch (e) {
      target.textContent = "";
    }
  }
}

// "Compare with…": a second query; the comparison is kept in the URL (vs.prompt, vs.completion).
function renderCompareForm(q) {
  const box = el("details", { id: "compare-form" });
  if (q.vs) box.open = true;
  box.append(el("summary", {}, "Compare with another query…"));
  const prompt = el("textarea", { id: "vs-prompt", rows: "2", "aria-label": "Second prompt" });
  prompt.value = q.vs ? q.vs.prompt : "";
  const completion = el("input", { id: "vs-completion", type: "text", "aria-label": "Second completion (optional)",
    placeholder: "completion (optional)" });
  completion.value = q.vs ? q.vs.completion : "";
  const go = el("button", { type: "button", id: "vs-submit" }, "Compare");
  go.addEventListener("click", () => {
    if (!prompt.value.trim()) return;
    const next = { ...q, vs: { prompt: prompt.value, completion: completion.value } };
    current.query = next;
    history.pushState(null, "", urlFor(next));
    runCompare(next);
  });
  box.append(prompt, completion, go);
  return box;
}

async function runCompare(q) {
  const out = $("compare");
  const gen = generation;
  setStatus(out, "Comparing the two queries…");
  const side = (x) => (x.completion ? { prompt: x.prompt, completion: x.completion } : { prompt: x.prompt });
  const direction = q.direction === "opponents" ? "opponents" : "proponents";
  try {
    const c = await api("/v1/compare", { method: "POST", body: JSON.stringify({
      a: side(q), b: side(q.vs), k: q.k, direction, ...scoringOptions(q) }) }, out, gen);
    if (gen !== generation) return;
    renderComparison(out, q, c);
  } catch (e) {
    if (e.message !== "superseded") setStatus(out, e.message, "error");
  }
}

function renderComparison(out, q, c) {
  out.className = "";
  out.replaceChildren(el("h2", {}, `Side by side: ${c.shared.length} of the top ${c.k} ${c.direction} shared`));
  out.append(el("p", { class: "muted" }, `A: “${q.prompt}${q.completion ? "→ " + q.completion : ""}” · ` +
    `B: “${q.vs.prompt}${q.vs.completion ? "→ " + q.vs.completion : ""}”. Ranks beyond ${c.depth} are not looked up.`));
  const where = (rank, score) => (rank ? `#${rank} (${signedScore(score)})` : `beyond #${c.depth}`);
  for (const [id, title, rows] of [["cmp-shared", "In both", c.shared], ["cmp-a", "Only in A's top-k", c.only_a],
    ["cmp-b", "Only in B's top-k", c.only_b]]) {
    const section = el("section", { id, class: "cmp" });
    section.append(el("h3", {}, `${title} (${rows.length})`));
    const list = el("ol", { class: "cmp-list" });
    for (const r of rows) {
      const li = el("li", { "data-example-id": String(r.example_id) });
      li.append(el("div", { class: "meta" }, `example ${r.example_id} · A ${where(r.rank_a, r.score_a)} · ` +
        `B ${where(r.rank_b, r.score_b)} · ${metaLine(r.meta)}`));
      li.append(el("p", { class: "snippet" }, r.snippet));
      list.append(li);
    }
    section.append(list);
    out.append(section);
  }
}
