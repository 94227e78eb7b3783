// LoRIF browse page. Everything from the API or the user is rendered with textContent, never
// as HTML. The query lives in the URL (?prompt=&completion=&k=&direction=&damping=&normalize=
// &totals=&example=&facet.KEY=&vs.prompt=&vs.completion=).
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_RETRIES = 5;
let current = null; // {query, body, shown} of the results on screen
let generation = 0; // ignore answers to superseded submissions

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

// A score with its sign, e.g. +0.652 (the page's one spelling of a score).
function signedScore(x, digits = 3) {
  return `${x >= 0 ? "+" : ""}${x.toPrecision(digits)}`;
}

function setStatus(target, text, kind = "") {
  target.textContent = text;
  target.className = kind;
}

function headers() {
  const h = { "content-type": "application/json" };
  const key = sessionStorage.getItem("lorif-api-key");
  if (key) h["x-api-key"] = key;
  return h;
}

function problemText(body, status) {
  if (!body) return `HTTP ${status}`;
  if (Array.isArray(body.errors) && body.errors.length) {
    return body.errors.map((e) => {
      const where = (e.loc || []).filter((x) => x !== "body").join(".");
      return where ? `${where}: ${e.msg}` : e.msg;
    }).join("; ");
  }
  return body.detail || body.title || `HTTP ${status}`;
}

// fetch JSON with the service's error contract: 429/503 are retried after Retry-After (the
// countdown is shown), other problems become an Error with a readable message.
async function api(path, options, statusEl, gen) {
  for (let attempt = 0; ; attempt++) {
    let resp;
    try {
      resp = await fetch(path, { ...options, headers: headers() });
    } catch (e) {
      throw new Error("Cannot reach the service (network error).");
    }
    if (resp.ok) return resp.json();
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if ((resp.status === 429 || resp.status === 503) && attempt < MAX_RETRIES) {
      const wait = Math.max(1, parseInt(resp.headers.get("retry-after") || "2", 10));
      const what = resp.status === 429 ? "The service is busy" : "The index is loading";
      for (let s = wait; s > 0; s--) {
        if (gen !== generation) throw new Error("superseded");
        setStatus(statusEl, `${what} — retrying in ${s} s…`, "busy");
        await new Promise((r) => setTimeout(r, 1000));
      }
      continue;
    }
    if (resp.status === 401) $("api-key-label").hidden = false;
    const prefix = resp.status === 429 ? "The service is busy. " :
      resp.status === 503 ? "The index is loading. " :
      resp.status === 401 ? "An API key is needed. " : "";
    throw new Error(prefix + problemText(body, resp.status));
  }
}

function readForm() {
  return {
    prompt: $("prompt").value,
    completion: $("completion").value,
    k: parseInt($("k").value || "10", 10),
    direction: $("direction").value,
    damping: $("damping").value.trim(),
    normalize: $("normalize").value,
    totals: $("totals").value.trim(),
  };
}

function fillForm(q) {
  $("prompt").value = q.prompt || "";
  $("completion").value = q.completion || "";
  $("k").value = q.k || 10;
  $("direction").value = q.direction || "proponents";
  $("damping").value = q.damping || "";
  $("normalize").value = q.normalize || "none";
  $("totals").value = q.totals || "";
  if (q.damping || (q.normalize && q.normalize !== "none") || q.totals) $("options").open = true;
}

function queryFromUrl() {
  const p = new URLSearchParams(location.search);
  if (!p.get("prompt")) return null;
  return {
    prompt: p.get("prompt"), completion: p.get("completion") || "",
    k: parseInt(p.get("k") || "10", 10), direction: p.get("direction") || "proponents",
    damping: p.get("damping") || "", normalize: p.get("normalize") || "none",
    totals: p.get("totals") || "",
    example: p.has("example") ? parseInt(p.get("example"), 10) : null,
    vs: p.get("vs.prompt") ? { prompt: p.get("vs.prompt"), completion: p.get("vs.completion") || "" } : null,
    facets: Object.fromEntries([...p.entries()].filter(([k]) => k.startsWith("facet."))
      .map(([k, v]) => [k.slice(6), v])),
  };
}

function urlFor(q, example = null) {
  const p = new URLSearchParams({ prompt: q.prompt, k: String(q.k), direction: q.direction });
  if (q.completion) p.set("completion", q.completion);
  if (q.damping) p.set("damping", q.damping);
  if (q.normalize && q.normalize !== "none") p.set("normalize", q.normalize);
  if (q.totals) p.set("totals", q.totals);
  for (const [k, v] of Object.entries(q.facets || {})) p.set(`facet.${k}`, v);
  if (q.vs) {
    p.set("vs.prompt", q.vs.prompt);
    if (q.vs.completion) p.set("vs.completion", q.vs.completion);
  }
  if (example !== null) p.set("example", String(example));
  return "?" + p.toString();
}

// The scoring options of a query as the API takes them (damping as a number, or absent).
function scoringOptions(q) {
  const o = {};
  if (q.damping) o.damping = Number(q.damping);
  if (q.normalize && q.normalize !== "none") o.normalize = q.normalize;
  return o;
}

function requestBody(q) {
  const body = { prompt: q.prompt, k: q.k, direction: q.direction, ...scoringOptions(q) };
  if (q.completion) body.completion = q.completion;
  if (q.totals) body.totals_by = q.totals;
  return body;
}

function metaLine(meta) {
  if (!meta) return "";
  const where = [meta.title || meta.play, [meta.act, meta.scene].filter(Boolean).join(".")]
    .filter(Boolean).join(" ");
  const parts = [];
  if (where) parts.push(where);
  if (meta.speaker) parts.push(meta.speaker);
  const known = new Set(["title", "play", "act", "scene", "speaker", "speech_id", "split"]);
  for (const [k, v] of Object.entries(meta)) {
    if (!known.has(k) && (typeof v === "string" || typeof v === "number")) parts.push(`${k}: ${v}`);
  }
  return parts.join(" · ");
}

function renderList(title, results, scale, q) {
  const section = el("section");
  section.append(el("h2", {}, title));
  const list = el("ol", { class: "results" });
  for (const r of results) {
    const li = el("li", { "data-example-id": String(r.example_id) });
    li.append(el("span", { class: "rank" }, `#${r.rank}`));
    const line = el("div", { class: "scoreline" });
    line.append(el("span", { class: "score" }, signedScore(r.score, 4)));
    const track = el("span", { class: "bar-track", "aria-hidden": "true" });
    const bar = el("span", { class: "bar " + (r.score >= 0 ? "pos" : "neg") });
    bar.style.display = "block";
    bar.style.width = `${scale > 0 ? Math.max(1, (100 * Math.abs(r.score)) / scale) : 0}%`;
    track.append(bar);
    line.append(track);
    const link = el("a", { class: "explain", href: urlFor(q, r.example_id) },
      `Explain example ${r.example_id}`);
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      history.pushState(null, "", urlFor(q, r.example_id));
      openDetail(q, r.example_id, r.score);
    });
    line.append(link);
    li.append(line);
    const meta = el("div", { class: "meta" }, metaLine(r.meta));
    if (r.verbatim_words) {
      meta.append(" ", el("span", { class: "verbatim-mark", title: "This example contains " +
        `${r.verbatim_words} of the query's words in a row, verbatim` }, `verbatim ${r.verbatim_words} words`));
    }
    li.append(meta);
    li.append(el("p", { class: "snippet" }, r.snippet));
    li.append(el("p", { class: "top-tokens muted", "aria-label": "The example's tokens that pushed its score most" }));
    list.append(li);
  }
  section.append(list);
  return section;
}

// Where the query's words occur verbatim in the training data: evidence of a different kind
// than influence (a quoted line's source need not be its top proponent).
function renderVerbatim(matches) {
  const section = el("section", { id: "verbatim", "aria-label": "Verbatim matches" });
  section.append(el("h2", {}, "Verbatim matches — the query's words, word for word"));
  section.append(el("p", { class: "muted" }, matches.length ?
    "Training examples that contain 4 or more of the query's words in a row, longest first. " +
    "This is text search, not influence: the examples above are ranked by how much they " +
    "shaped the model's prediction, which a quoted source need not have done most." :
    "No training example contains 4 or more of the query's words in a row."));
  const list = el("ol", { class: "verbatim" });
  for (const m of matches) {
    const li = el("li", { "data-example-id": String(m.example_id) });
    li.append(el("span", { class: "rank" }, `${m.words} words`));
    li.append(el("div", { class: "meta" }, `example ${m.example_id} · ` + metaLine(m.meta)));
    const p = el("p", { class: "snippet" });
    const at = m.snippet.indexOf(m.text);
    if (at >= 0) {
      p.append(m.snippet.slice(0, at), el("mark", {}, m.text), m.snippet.slice(at + m.text.length));
    } else {
      p.textContent = m.snippet;
    }
    li.append(p);
    list.append(li);
  }
  section.append(list);
  return section;
}

function renderResults(q, body, shown = q.k) {
  current = { query: q, body, shown };
  const out = $("results");
  out.replaceChildren();
  $("examples").hidden = true;
  $("k").value = shown;  // "load more" shows more than the k asked for: the form says so
  const rows = shownRows(q, body, shown);
  const all = rows.flatMap(([, list]) => list);
  const scale = Math.max(0, ...all.map((r) => Math.abs(r.score)));
  if (body.score_histogram) out.append(renderHistogram(body.score_histogram, all));
  if (body.totals || facetValues(body).length) out.append(renderTotals(q, body));
  out.append(renderFacets(q, body, (facets) => {
    const fq = { ...q, facets };
    history.pushState(null, "", urlFor(fq));
    renderResults(fq, body, q.k);
  }));
  const titles = { proponents: "Proponents — helped the model say this", opponents: "Opponents — worked against it" };
  for (const [direction, list, total] of rows) {
    if (!body[direction]) continue;
    const section = renderList(titles[direction] + (total > list.length ? ` (${list.length} of ${total} fetched)` : ""), list, scale, q);
    section.dataset.direction = direction;
    out.append(section);
  }
  const more = renderMore(q, body, shown, (rescan) => {
    history.replaceState(null, "", urlFor({ ...q, k: shown + q.k }));
    return rescan ? runQuery(q, false, API_MAX_K, shown + q.k) : renderResults(q, body, shown + q.k);
  });
  if (more) out.append(more);
  out.append(renderExport(q, body, shown));
  out.append(renderCompareForm(q));
  if (body.verbatim) out.append(renderVerbatim(body.verbatim));
  const t = body.timings;
  const how = body.cached ? "from the cache" :
    `queue ${t.queue_ms.toFixed(0)} ms, featurize ${t.featurize_ms.toFixed(0)} ms, scan ${t.scan_ms.toFixed(0)} ms`;
  const filtered = Object.keys(q.facets || {}).length ? " matching the filters" : "";
  setStatus($("status"), `${all.length} results${filtered} shown for a ${body.query_tokens}-token query in ${t.total_ms.toFixed(0)} ms (${how}).`);
  if (all.length) metaKeys(all[0].meta);
  highlightTokens(q, out);
  if (q.vs) runCompare(q); else $("compare").replaceChildren();
}

async function runQuery(q, push, k = fetchK(q), shown = q.k) {
  const gen = ++generation;
  if (push) history.pushState(null, "", urlFor(q));
  $("submit").disabled = true;
  setStatus($("status"), "Scoring the query against every training example…");
  try {
    const body = await api("/v1/attributions", { method: "POST", body: JSON.stringify({ ...requestBody(q), k }) },
      $("status"), gen);
    if (gen !== generation) return;
    renderResults(q, body, shown);
  } catch (e) {
    if (gen !== generation || e.message === "superseded") return;
    $("results").replaceChildren();
    setStatus($("status"), e.message, "error");
  } finally {
    if (gen === generation) $("submit").disabled = false;
  }
}

function renderTokens(target, tokens) {
  target.replaceChildren();
  const scale = Math.max(1e-30, ...tokens.map((t) => Math.abs(t.contribution)));
  for (const t of tokens) {
    const span = el("span", { class: "tok" + (t.target ? "" : " context") }, t.text);
    const a = Math.min(1, Math.abs(t.contribution) / scale);
    const rgb = t.contribution >= 0 ? "var(--pos)" : "var(--neg)";
    span.style.backgroundColor = `rgba(${rgb}, ${(0.08 + 0.72 * a).toFixed(3)})`;
    if (a > 0.6) span.style.color = "#fff";
    span.title = signedScore(t.contribution) +
      (t.target ? "" : " (context, not a loss target)");
    span.dataset.contribution = String(t.contribution);
    target.append(span);
  }
}

async function openDetail(q, exampleId, score) {
  const dialog = $("detail");
  const status = $("detail-status");
  $("detail-title").textContent = `Training example ${exampleId}`;
  $("detail-meta").replaceChildren();
  $("detail-tokens").replaceChildren();
  $("query-tokens").replaceChildren();
  if (!dialog.open) dialog.showModal();
  setStatus(status, "Re-running this example to split its score over tokens…");
  const gen = generation;
  try {
    const body = { prompt: q.prompt, example_id: exampleId };
    if (q.completion) body.completion = q.completion;
    const [ex, expl] = await Promise.all([
      api(`/v1/examples/${exampleId}`, { method: "GET" }, status, gen),
      api("/v1/explanations", { method: "POST", body: JSON.stringify(body) }, status, gen),
    ]);
    const meta = $("detail-meta");
    const rows = [["score", signedScore(expl.score, 5)], ["score in the index", signedScore(expl.index_score, 5)],
      ["tokens", String(ex.n_tokens)]];
    $("detail-score-note").textContent = "The score is recomputed here from the example's full " +
      "(projected) gradient, so it can be split over tokens; the ranking used the index's " +
      "stored rank-c factors of that gradient. They differ by what the rank-c truncation drops.";
    for (const [k, v] of Object.entries(ex.meta || {})) rows.push([k, String(v)]);
    for (const [k, v] of rows) { meta.append(el("dt", {}, k)); meta.append(el("dd", {}, v)); }
    renderTokens($("detail-tokens"), expl.example_tokens);
    renderTokens($("query-tokens"), expl.query_tokens);
    renderContext(exampleId, ex, status, gen);
    setStatus(status, expl.example_truncated ?
      "The example is longer than the index's token limit; only the indexed part is shown." : "");
  } catch (e) {
    if (e.message !== "superseded") setStatus(status, e.message, "error");
  }
}

// The examples around this one in its source (GET /v1/examples/{id}/context: by the
// metadata's position or speech_id within its play/act/scene or source, else by id), this one
// marked.
async function renderContext(exampleId, ex, status, gen) {
  const list = $("detail-context");
  list.replaceChildren();
  const ctx = await api(`/v1/examples/${exampleId}/context?n=2`, { method: "GET" }, status, gen);
  $("context-how").textContent = ctx.by === "order key" ?
    "(the examples around it in its source, in their order there)" :
    "(the examples with neighbouring ids: the data carries no position or speech_id)";
  for (const r of ctx.examples) {
    const li = el("li", { "data-example-id": String(r.example_id) });
    if (r.example_id === exampleId) li.setAttribute("aria-current", "true");
    li.append(el("div", { class: "meta" }, `example ${r.example_id} · ${metaLine(r.meta)}`));
    li.append(el("p", { class: "snippet" }, r.text.length > 600 ? r.text.slice(0, 600) + "…" : r.text));
    list.append(li);
  }
}

function closeDetail() {
  const dialog = $("detail");
  if (dialog.open) dialog.close();
}

// While a build publishes as it goes (the full demo), the summary is read again every
// GROWING_POLL_MS: the server follows the index, and so does this line.
const GROWING_POLL_MS = 10000;
let summaryTimer = null;

async function loadSummary(first = true) {
  try {
    const s = await api("/v1/index", { method: "GET" }, $("index-summary"), generation);
    const model = s.model.spec || s.model.path || "model";
    const curvature = s.curvature === "lowrank" ? `r=${s.curvature_rank_r}` : s.curvature;
    const rows = s.target_rows
      ? `indexed ${s.n_examples.toLocaleString()} of ${s.target_rows.toLocaleString()} training examples — growing`
      : `${s.n_examples.toLocaleString()} training examples`;
    const coverage = s.curvature_rows < s.n_examples
      ? ` (curvature over the first ${s.curvature_rows.toLocaleString()})` : "";
    const layers = `${s.n_layers} linear layers` + (s.blocks ? ` in ${s.blocks} blocks` : "");
    $("index-summary").textContent = `${rows} · ${model} · ` +
      `${layers} · c=${s.rank_c}, ${curvature}${coverage} · ${s.bytes_per_example.toLocaleString()} B/example ` +
      `(${s.dense_ratio}× less than dense) · ${s.scoring_path} scan`;
    if (first && !queryFromUrl()) exampleQueries(s);
    clearTimeout(summaryTimer);
    if (s.target_rows || s.curvature_rows < s.n_examples) {
      summaryTimer = setTimeout(() => loadSummary(false), GROWING_POLL_MS);
    }
  } catch (e) {
    if (first) setStatus($("index-summary"), e.message, "error");
    else summaryTimer = setTimeout(() => loadSummary(false), GROWING_POLL_MS);  // try again
  }
}

function fromUrl() {
  const q = queryFromUrl();
  if (!q) { closeDetail(); return; }
  fillForm(q);
  const same = current && JSON.stringify(requestBody(current.query)) === JSON.stringify(requestBody(q)) &&
    JSON.stringify(current.query.vs) === JSON.stringify(q.vs);
  const detail = () => (q.example !== null && !Number.isNaN(q.example) ? openDetail(q, q.example) : closeDetail());
  if (same && JSON.stringify(current.query.facets || {}) !== JSON.stringify(q.facets || {})) {
    renderResults(q, current.body, q.k);
  }
  if (same) detail();
  else runQuery(q, false).then(detail);
}

document.addEventListener("DOMContentLoaded", () => {
  $("query-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = readForm();
    if (!q.prompt.trim()) { setStatus($("status"), "Type a prompt first.", "error"); return; }
    runQuery(q, true);
  });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("query-form").requestSubmit();
  });
  $("api-key").addEventListener("change", (ev) => sessionStorage.setItem("lorif-api-key", ev.target.value));
  const leaveDetail = () => {
    if (current) history.pushState(null, "", urlFor(current.query));
    closeDetail();
  };
  $("detail-close").addEventListener("click", leaveDetail);
  $("detail").addEventListener("cancel", (ev) => { ev.preventDefault(); leaveDetail(); });
  window.addEventListener("popstate", fromUrl);
  loadSummary();
  fromUrl();
});
