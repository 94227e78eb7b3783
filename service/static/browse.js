// Browsing one answer (loaded after app.js, whose helpers it uses): pages over a larger top-k
// fetched in one scan, facets over the results' metadata, the shown results exported as JSON
// or CSV with their provenance and full text, example queries on the empty page (those stored
// with the index). Everything is rendered with textContent.
"use strict";

const API_MAX_K = 1000;
// A metadata key is a facet when some value repeats among the fetched results (an id, unique
// per example, is not) and it has at most this many values (the full demo's 100 results name
// ~80 speakers).
const FACET_MAX_VALUES = 200;
const FACET_SELECT_MAX = 15; // more values than this: a text field with suggestions
const FACET_SKIP = new Set(["speech_id", "position", "split"]);

// One scan fetches several pages: 5 pages or 100 results, at most the API's maximum.
function fetchK(q) {
  return Math.min(API_MAX_K, Math.max(100, 5 * q.k));
}

function matchesFacets(r, facets) {
  return Object.entries(facets || {}).every(([k, v]) => String((r.meta || {})[k]) === v);
}

// Every result one answer holds, both directions.
function fetchedRows(body) {
  return [...(body.proponents || []), ...(body.opponents || [])];
}

// facet key -> [[value, count], ...] over the fetched results (both directions)
function facetValues(body) {
  const all = fetchedRows(body);
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
  const seen = new Set(); // partitions already offered: "play" and "title" name the same one
  for (const [k, m] of counts) {
    const carried = [...m.values()].reduce((a, b) => a + b, 0);
    if (m.size < 2 || m.size > FACET_MAX_VALUES || m.size === carried) continue;
    const first = new Map(); // value -> the first result holding it: a partition's label
    const partition = all.map((r, i) => {
      const v = (r.meta || {})[k];
      if (v === undefined) return -1;
      if (!first.has(v)) first.set(v, i);
      return first.get(v);
    }).join(",");
    if (seen.has(partition)) continue;
    seen.add(partition);
    out.push([k, [...m.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))]);
  }
  return out;
}

function fetchedCount(body) {
  return fetchedRows(body).length;
}

// One control per facet: a select of its values with their counts among the fetched results,
// or, past FACET_SELECT_MAX values, a text field with the values as suggestions.
function renderFacets(q, body, onChange) {
  const bar = el("div", { id: "facets", class: "row", role: "group", "aria-label": "Filter results" });
  const facets = facetValues(body);
  if (!facets.length) return bar;
  bar.append(el("span", { class: "muted" }, `Filter (counts among the ${fetchedCount(body)} fetched results):`));
  const apply = (key, value) => {
    const next = { ...(q.facets || {}) };
    if (value) next[key] = value; else delete next[key];
    onChange(next);
  };
  for (const [key, values] of facets) {
    const label = el("label", { class: "facet" }, `${key} `);
    if (values.length > FACET_SELECT_MAX) {
      const list = el("datalist", { id: `facet-values-${key}` });
      for (const [v, n] of values) list.append(el("option", { value: v }, `${n}`));
      const input = el("input", { type: "text", "data-facet": key, list: list.id, size: "14",
        placeholder: `any of ${values.length}`, "aria-label": `Filter by ${key}` });
      input.value = (q.facets || {})[key] || "";
      input.addEventListener("change", () => {
        const v = input.value.trim();
        if (!v || values.some(([x]) => x === v)) apply(key, v);
      });
      label.append(input, list);
    } else {
      const select = el("select", { "data-facet": key, "aria-label": `Filter by ${key}` });
      select.append(el("option", { value: "" }, `all ${values.length}`));
      for (const [v, n] of values) select.append(el("option", { value: v }, `${v} (${n})`));
      select.value = (q.facets || {})[key] || "";
      select.addEventListener("change", () => apply(key, select.value));
      label.append(select);
    }
    bar.append(label);
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

// The shown rows with their full text (``full`` is the same answer asked with full_text: a
// cache hit, since the scan's options are the same).
function exportRows(q, body, shown, full) {
  const text = new Map(fetchedRows(full).map((r) => [r.example_id, r.text]));
  const out = [];
  for (const [direction, list] of shownRows(q, body, shown)) {
    for (const r of list) {
      out.push({ direction, rank: r.rank, example_id: r.example_id, score: r.score,
        verbatim_words: r.verbatim_words || 0, meta: r.meta || {}, text: text.get(r.example_id) });
    }
  }
  return out;
}

function csvCell(v) {
  const s = v === undefined || v === null ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

// Provenance first, as "# key: value" comment lines, then the rows (full text last).
function toCsv(provenance, facets, rows) {
  const lines = Object.entries({ ...provenance, facets }).map(([k, v]) =>
    `# ${k}: ${typeof v === "object" && v !== null ? JSON.stringify(v) : v}`);
  const metaKeys = [...new Set(rows.flatMap((r) => Object.keys(r.meta)))].sort();
  const head = ["direction", "rank", "example_id", "score", "verbatim_words", ...metaKeys, "text"];
  lines.push(head.join(","));
  for (const r of rows) {
    lines.push([r.direction, r.rank, r.example_id, r.score, r.verbatim_words,
      ...metaKeys.map((k) => r.meta[k]), r.text].map(csvCell).join(","));
  }
  return lines.join("\r\n") + "\r\n";
}

function download(name, type, text) {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

// Exports carry what reproduces them (the answer's provenance: index fingerprint and version,
// model, preconditioner, damping, normalisation, k, direction, query, time, server version).
function renderExport(q, body, shown) {
  const bar = el("div", { id: "export", class: "row" });
  const fetchFull = () => api("/v1/attributions", { method: "POST", body: JSON.stringify({
    ...requestBody(q), k: fetchK(q) > shown ? fetchK(q) : shown, full_text: true, verbatim: false,
  }) }, $("status"), generation);
  const run = async (kind) => {
    try {
      const full = await fetchFull();
      const rows = exportRows(q, body, shown, full);
      const provenance = { ...body.provenance, k: shown };
      if (kind === "json") {
        download("lorif-results.json", "application/json", JSON.stringify(
          { provenance, facets: q.facets || {}, results: rows }, null, 1));
      } else {
        download("lorif-results.csv", "text/csv", toCsv(provenance, q.facets || {}, rows));
      }
    } catch (e) {
      if (e.message !== "superseded") setStatus($("status"), e.message, "error");
    }
  };
  const json = el("button", { type: "button", class: "secondary" }, "Export JSON");
  json.addEventListener("click", () => run("json"));
  const csv = el("button", { type: "button", class: "secondary" }, "Export CSV");
  csv.addEventListener("click", () => run("csv"));
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

// The empty page's example queries: those stored with the index (`lorif index
// example-queries`; the demo stores its own), then training example 0 itself. The metadata
// keys of example 0 are offered for "Sum influence by".
async function exampleQueries(summary) {
  const box = $("examples");
  if (!box) return;
  const list = el("ul");
  const add = (prompt, completion, note) => {
    const li = el("li");
    const label = prompt && completion ? `${prompt}→ ${completion}` : prompt || completion;
    const b = el("button", { type: "button", class: "linkish" }, label);
    b.addEventListener("click", () => {
      fillForm({ prompt: prompt || completion, completion: prompt ? completion : "", k: 10, direction: "proponents" });
      $("query-form").requestSubmit();
    });
    li.append(b);
    if (note) li.append(el("span", { class: "muted" }, ` — ${note}`));
    list.append(li);
  };
  for (const ex of summary.example_queries || []) add(ex.prompt, ex.completion, ex.note);
  try {
    const ex = await api("/v1/examples/0", { method: "GET" }, $("status"), generation);
    add(ex.text.slice(0, 300), "", "training example 0 itself: it should rank first (self-retrieval)");
    metaKeys(ex.meta);
  } catch (e) { /* the examples above are enough */ }
  box.replaceChildren(el("h2", {}, "Try"), list);
}

function metaKeys(meta) {
  const list = $("meta-keys");
  list.replaceChildren(...Object.keys(meta || {}).filter((k) => !FACET_SKIP.has(k))
    .map((k) => el("option", { value: k })));
}
