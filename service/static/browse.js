// Browsing one answer (loaded after app.js, whose helpers it uses): pages over a larger top-k
// fetched in one scan, facets over the results' metadata, the shown results exported as JSON
// or CSV, example queries on the empty page. Everything is rendered with textContent.
"use strict";

const API_MAX_K = 1000;
// A metadata key is a facet when some value repeats among the fetched results (an id, unique
// per example, is not) and it has at most this many values (the full demo's 100 results name
// ~80 speakers).
const FACET_MAX_VALUES = 200;
const FACET_SKIP = new Set(["speech_id", "split"]);

// One scan fetches several pages: 5 pages or 100 results, at most the API's maximum.
function fetchK(q) {
  return Math.min(API_MAX_K, Math.max(100, 5 * q.k));
}

function matchesFacets(r, facets) {
  return Object.entries(facets || {}).every(([k, v]) => String((r.meta || {})[k]) === v);
}

// facet key -> [[value, count], ...] over the fetched results (both directions)
function facetValues(body) {
  const all = [...(body.proponents || []), ...(body.opponents || [])];
  const counts = new Map();
  for (const r of all) {
    for (const [k, v] of Object.entries(r.meta || {})) {
      if (FACET_SKIP.has(k) || (typeof v !== "string" && typeof v !== "number")) continue;
      if (!counts.has(k)) counts.set(k, new Map());
      const m = counts.get(k);
      m.set(String(v), (m.get(String(v)) || 0) + 1);
    }
  }
  const out = [];
  for (const [k, m] of counts) {
    const carried = [...m.values()].reduce((a, b) => a + b, 0);
    if (m.size < 2 || m.size > FACET_MAX_VALUES || m.size === carried) continue;
    out.push([k, [...m.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))]);
  }
  return out;
}

function renderFacets(q, body, onChange) {
  const bar = el("div", { id: "facets", class: "row", role: "group", "aria-label": "Filter results" });
  for (const [key, values] of facetValues(body)) {
    const select = el("select", { "data-facet": key, "aria-label": `Filter by ${key}` });
    select.append(el("option", { value: "" }, `all ${key}s`));
    for (const [v, n] of values) select.append(el("option", { value: v }, `${v} (${n})`));
    select.value = (q.facets || {})[key] || "";
    select.addEventListener("change", () => {
      const facets = { ...(q.facets || {}) };
      if (select.value) facets[key] = select.value; else delete facets[key];
      onChange(facets);
    });
    bar.append(el("label", {}, `${key} `), select);
  }
  return bar;
}

function shownRows(q, body, shown) {
  const rows = [];
  for (const direction of ["proponents", "opponents"]) {
    const list = (body[direction] || []).filter((r) => matchesFacets(r, q.facets));
    rows.push([direction, list.slice(0, shown), list.length]);
  }
  return rows;
}

function exportRows(q, body, shown) {
  const out = [];
  for (const [direction, list] of shownRows(q, body, shown)) {
    for (const r of list) {
      out.push({ direction, rank: r.rank, example_id: r.example_id, score: r.score,
        verbatim_words: r.verbatim_words || 0, meta: r.meta || {}, snippet: r.snippet });
    }
  }
  return out;
}

function csvCell(v) {
  const s = v === undefined || v === null ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function toCsv(rows) {
  const metaKeys = [...new Set(rows.flatMap((r) => Object.keys(r.meta)))].sort();
  const head = ["direction", "rank", "example_id", "score", "verbatim_words", ...metaKeys, "snippet"];
  const lines = [head.join(",")];
  for (const r of rows) {
    lines.push([r.direction, r.rank, r.example_id, r.score, r.verbatim_words,
      ...metaKeys.map((k) => r.meta[k]), r.snippet].map(csvCell).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

function download(name, type, text) {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function renderExport(q, body, shown) {
  const bar = el("div", { id: "export", class: "row" });
  const json = el("button", { type: "button", class: "secondary" }, "Export JSON");
  json.addEventListener("click", () => download("lorif-results.json", "application/json",
    JSON.stringify({ query: requestBody(q), facets: q.facets || {}, results: exportRows(q, body, shown) }, null, 1)));
  const csv = el("button", { type: "button", class: "secondary" }, "Export CSV");
  csv.addEventListener("click", () => download("lorif-results.csv", "text/csv", toCsv(exportRows(q, body, shown))));
  bar.append(json, csv);
  return bar;
}

// The "load more" control: more of the fetched list, or one more scan with the API's maximum.
function renderMore(q, body, shown, onMore) {
  const rows = shownRows(q, body, shown);
  const hidden = rows.some(([, list, total]) => total > list.length);
  const fetched = Math.max(...rows.map(([d]) => (body[d] || []).length));
  const more = !hidden && fetched >= fetchK(q) && fetchK(q) < API_MAX_K;
  if (!hidden && !more) return null;
  const button = el("button", { type: "button", id: "load-more", class: "secondary" },
    `Load ${q.k} more`);
  button.addEventListener("click", () => onMore(!hidden));
  return button;
}

async function exampleQueries(summary) {
  const box = $("examples");
  if (!box) return;
  const list = el("ul");
  const add = (prompt, completion, note) => {
    const li = el("li");
    const b = el("button", { type: "button", class: "linkish" }, completion ? `${prompt}→ ${completion}` : prompt);
    b.addEventListener("click", () => {
      fillForm({ prompt, completion, k: 10, direction: "proponents" });
      $("query-form").requestSubmit();
    });
    li.append(b, el("span", { class: "muted" }, ` — ${note}`));
    list.append(li);
  };
  if (String(summary.model.spec || "").includes("shakespeare")) {
    add("To be, or not to be: that is the question.", "",
      "a famous line: its influences and, below them, its verbatim source (not the same thing)");
    add("Speak, what news from the field? ", "The king is slain, and all his army fled.",
      "prompt + completion: only the completion's tokens count");
    add("O Romeo, Romeo! wherefore art thou Romeo?", "", "filter the results by play or speaker");
  }
  try {
    const ex = await api("/v1/examples/0", { method: "GET" }, $("status"), generation);
    add(ex.text.slice(0, 300), "", "training example 0 itself: it should rank first (self-retrieval)");
  } catch (e) { /* the examples above are enough */ }
  box.replaceChildren(el("h2", {}, "Try"), list);
}
