// The ABSA dashboard: hash-routed views over the /v1 API, charts drawn as inline SVG.
// Routes: #jobs (default), #job=<id>, #models; #key=<api key> signs in (combinable with
// the others: #key=K&job=J). The key lives in sessionStorage only.
"use strict";

const KEY = "absa.key";
const REFRESH_MS = 3000;
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = { train_loss: "#2563eb", validation_loss: "#dc2626", accuracy: "#16a34a", macro_f1: "#7c3aed", f_avg: "#ea580c" };
// Sweep children, one color each (trial order).
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#7c3aed", "#ea580c", "#0891b2", "#be185d", "#65a30d", "#4338ca", "#b45309", "#0f766e", "#6b7280"];
const SHARD_STATES = { succeeded: "#16a34a", running: "#2563eb", dispatched: "#60a5fa", queued: "#fbbf24", failed: "#dc2626", cancelled: "#9aa5b1" };

const main = document.getElementById("main");
let timer = null; // the pending auto-refresh
let generation = 0; // bumped on every navigation: answers for an older view are dropped

// ---- DOM helpers (text always goes in as text nodes, never as HTML)

function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}
function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}
function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}
const short = (id) => String(id).slice(0, 8);
const when = (ts) => (ts ? new Date(ts).toLocaleString() : "–");
const hasNumber = (items, key) => items.some((i) => typeof i[key] === "number");
const num = (v, digits = 4) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : v ?? "–");

// ---- the API, with the session's key

class SignedOut extends Error {}

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new SignedOut("");
  const response = await fetch("/v1" + path, { headers: { Authorization: "Bearer " + key } });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    throw new SignedOut("That key was refused.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.detail || body.error || response.statusText}`);
  return body;
}

// ---- routing

/** Takes a key out of the fragment (into sessionStorage, out of the address bar). */
function routeParams() {
  const parts = location.hash.slice(1).split("&").filter(Boolean);
  const key = parts.find((p) => p.startsWith("key="));
  if (key) {
    sessionStorage.setItem(KEY, decodeURIComponent(key.slice(4)));
    history.replaceState(null, "", "#" + parts.filter((p) => p !== key).join("&"));
  }
  return new URLSearchParams(parts.filter((p) => p !== key).join("&"));
}

function show() {
  clearTimeout(timer);
  const gen = ++generation;
  const params = routeParams();
  if (!sessionStorage.getItem(KEY)) return signIn("");
  const job = params.get("job");
  const name = job ? "job" : params.has("models") ? "models" : "jobs";
  const view = job ? () => jobView(job) : name === "models" ? modelsView : jobsView;
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === name);
  const who = document.getElementById("who");
  if (!who.textContent) api("/me").then((me) => (who.textContent = `${me.team} · ${me.role}`), () => {});
  refresh(view, gen);
}

async function refresh(view, gen) {
  let again = true;
  try {
    const result = await view();
    if (gen !== generation) return;
    main.replaceChildren(result.node);
    again = result.again;
  } catch (e) {
    if (gen !== generation) return;
    if (e instanceof SignedOut) return signIn(e.message);
    main.replaceChildren(el("p", { class: "card error" }, e.message));
  }
  if (again) timer = setTimeout(() => refresh(view, gen), REFRESH_MS);
}

function signIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  const form = document.getElementById("sign-in-template").content.firstElementChild.cloneNode(true);
  form.querySelector(".error").textContent = message;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, form.elements.key.value.trim());
    show();
  });
  main.replaceChildren(form);
}

// ---- small pieces

function stateBadge(state) {
  return el("span", { class: `state state-${state}`, "data-state": state }, state);
}

function progressBar(fraction) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
  const fill = el("span");
  fill.style.width = pct + "%"; // CSSOM, allowed by the CSP (a style attribute would not be)
  const bar = el("span", { class: "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 }, fill);
  return el("span", { class: "progress", "data-progress": fraction }, bar, el("span", { class: "bar-label" }, pct + "%"));
}

function table(headers, rows, attrs = {}) {
  return el("table", attrs, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

const card = (...children) => el("section", { class: "card" }, ...children);

// ---- views: each returns { node, again } (again: refresh in a few seconds)

async function jobsView() {
  const { jobs } = await api("/jobs?limit=100");
  const rows = jobs.map((j) =>
    el("tr", { "data-job-id": j.id, "data-state": j.state },
      el("td", {}, el("a", { href: "#job=" + j.id, class: "id" }, short(j.id))),
      el("td", {}, j.kind),
      el("td", {}, stateBadge(j.state)),
      el("td", {}, progressBar(j.progress)),
      el("td", { class: "num" }, j.attempts),
      el("td", {}, when(j.created_at)),
      el("td", {}, when(j.updated_at)),
      el("td", { class: "error" }, j.last_error || "")));
  const body = jobs.length
    ? table(["Job", "Kind", "State", "Progress", "Attempts", "Created", "Updated", "Last error"], rows, { id: "jobs-table" })
    : el("p", { class: "muted" }, "No jobs yet.");
  return { node: card(el("h1", {}, "Jobs"), body), again: true };
}

async function jobView(id) {
  const job = await api("/jobs/" + encodeURIComponent(id));
  const parts = [jobSummary(job)];
  if (job.kind === "train") parts.push(...trainingParts((await api(`/jobs/${job.id}/metrics`)).epochs));
  if (job.kind === "score" && job.shards) parts.push(shardsPart(job));
  if (job.kind === "sweep" && job.children) parts.push(...(await sweepParts(job)));
  parts.push(eventsPart(job.events || []));
  return { node: el("div", { id: "job", "data-job-id": job.id, "data-state": job.state }, parts), again: !FINAL.has(job.state) };
}

function jobSummary(job) {
  const hp = (job.parameters && job.parameters.hyperparameters) || null;
  const field = (label, value) => value !== undefined && value !== null && value !== "" && el("div", {}, el("span", {}, label), value);
  return card(
    el("h1", {}, `${job.kind === "train" ? "Training" : job.kind === "score" ? "Scoring" : job.kind} job `, el("span", { class: "id" }, short(job.id)), " ", stateBadge(job.state)),
    el("div", { class: "summary" },
      field("progress", progressBar(job.progress)),
      field("id", el("span", { class: "id" }, job.id)),
      field("attempts", String(job.attempts)),
      field("created", when(job.created_at)),
      field("updated", when(job.updated_at)),
      field("model version", job.model_version_id && el("a", { href: "#models", class: "id" }, short(job.model_version_id))),
      field("predictions", job.predictions),
      field("hyperparameters", hp && el("code", {}, Object.entries(hp).map(([k, v]) => `${k}=${v}`).join(" "))),
      field("last error", job.last_error && el("span", { class: "error" }, job.last_error))));
}

function trainingParts(epochs) {
  if (!epochs.length) return [card(el("p", { class: "muted" }, "No epoch has finished yet."))];
  const points = (key) => epochs.map((e) => [e.epoch, e[key]]);
  const charts = el("div", { class: "charts" },
    card(lineChart("curve-loss", "Loss", [
      { name: "train_loss", label: "train", points: points("train_loss") },
      { name: "validation_loss", label: "validation", points: points("validation_loss") }])),
    card(lineChart("curve-accuracy", "Validation accuracy", [{ name: "accuracy", label: "accuracy", points: points("accuracy") }])),
    card(lineChart("curve-macro-f1", "Validation macro-F1", [{ name: "macro_f1", label: "macro-F1", points: points("macro_f1") }])),
    // Stance's F_avg (mean F1 of against and favor): only for label sets with both.
    hasNumber(epochs, "f_avg") && card(lineChart("curve-f-avg", "Validation F_avg (stance)", [{ name: "f_avg", label: "F_avg", points: points("f_avg") }])));
  const last = epochs[epochs.length - 1];
  const report = last.detail && last.detail.report;
  return [charts, report && card(el("div", { class: "matrix" }, heatMap(report, last.epoch), classTable(report)))];
}

/** A sweep's children: their validation curves together, and a table that is the legend. */
async function sweepParts(job) {
  const children = job.children;
  if (!children.length) return [card(el("p", { class: "muted" }, "No child has started yet."))];
  const curves = await Promise.all(children.map((c) => api(`/jobs/${c.job_id}/metrics`)));
  const anyPoint = curves.some((c) => c.epochs.length);
  const label = (c) => Object.entries(c.values || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  const color = (i) => PALETTE[i % PALETTE.length];
  const series = (key) => children.map((c, i) => ({
    name: `trial-${c.trial}`, label: label(c), color: color(i), points: curves[i].epochs.map((e) => [e.epoch, e[key]]) }));
  // Stance's F_avg: a chart where the curves have it, a column where the children do.
  const fAvgCurves = curves.some((c) => hasNumber(c.epochs, "f_avg"));
  const fAvg = hasNumber(children, "validation_f_avg");
  const charts = !anyPoint ? card(el("p", { class: "muted" }, "No child has finished an epoch yet.")) : el("div", { class: "charts" },
    card(lineChart("sweep-macro-f1", "Validation macro-F1", series("macro_f1"), { legend: false })),
    fAvgCurves && card(lineChart("sweep-f-avg", "Validation F_avg (stance)", series("f_avg"), { legend: false })),
    card(lineChart("sweep-accuracy", "Validation accuracy", series("accuracy"), { legend: false })),
    card(lineChart("sweep-validation-loss", "Validation loss", series("validation_loss"), { legend: false })));
  const rows = children.map((c, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = color(i);
    const chosen = job.chosen_model_version_id && c.model_version_id === job.chosen_model_version_id;
    return el("tr", { "data-trial": c.trial, class: chosen ? "chosen" : "" },
      el("td", {}, swatch, ` ${c.trial}`),
      el("td", {}, el("a", { href: `#job=${c.job_id}` }, label(c))),
      el("td", {}, stateBadge(c.state)),
      el("td", { class: "num" }, c.epoch ?? ""),
      ...[c.validation_loss, c.validation_accuracy, c.validation_macro_f1, ...(fAvg ? [c.validation_f_avg] : []), c.test_accuracy]
        .map((v) => el("td", { class: "num" }, typeof v === "number" ? v.toFixed(4) : "")),
      el("td", {}, chosen ? "chosen" : ""));
  });
  const heads = ["trial", "values", "state", "epoch", "val loss", "val accuracy", "val macro-F1", ...(fAvg ? ["val F_avg"] : []), "test accuracy", ""];
  return [charts, card(el("h2", {}, "Children (chosen on validation; test figures never used)"), table(heads, rows, { id: "sweep-children" }))];
}

function classTable(report) {
  const rows = report.per_class.map((c) =>
    el("tr", {}, el("td", {}, c.label), ...[c.precision, c.recall, c.f1].map((v) => el("td", { class: "num" }, v.toFixed(3))), el("td", { class: "num" }, c.support)));
  return el("div", {}, el("h2", {}, "Per class (validation)"), table(["label", "precision", "recall", "F1", "support"], rows, { id: "per-class" }));
}

function shardsPart(job) {
  const s = job.shards;
  const W = 1000, H = 30; // stretched to the card's width
  const bar = svg("svg", { id: "shards", class: "shards", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-total": s.total },
    svg("rect", { x: 0, y: 0, width: W, height: H, fill: "#e4e7eb" }));
  const legend = el("p", { class: "legend" });
  let x = 0;
  for (const [state, color] of Object.entries(SHARD_STATES)) {
    const n = s[state] || 0;
    if (n && s.total) {
      const w = (n / s.total) * W;
      bar.append(svg("rect", { class: "shard-segment", "data-state": state, "data-count": n, x, y: 0, width: w, height: H, fill: color },
        svg("title", {}, `${state}: ${n}`)));
      x += w;
    }
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = color;
    legend.append(el("span", { "data-state": state }, swatch, `${state} ${n}`));
  }
  return card(el("h2", {}, `Shards: ${s.succeeded} of ${s.total} done`), bar, legend);
}

function eventsPart(events) {
  if (!events.length) return card(el("h2", {}, "Latest events"), el("p", { class: "muted" }, "No events yet."));
  const rows = events.slice(-12).reverse().map((e) =>
    el("tr", {}, el("td", {}, when(e.at)), el("td", {}, e.kind), el("td", {}, el("code", {}, JSON.stringify(e.detail).slice(0, 160)))));
  return card(el("h2", {}, "Latest events"), el("div", { class: "events" }, table(["at", "event", "detail"], rows)));
}

async function modelsView() {
  const [{ models }, { aliases }] = await Promise.all([api("/models"), api("/aliases")]);
  if (!models.length) return { node: card(el("h1", {}, "Model versions"), el("p", { class: "muted" }, "No model version yet.")), again: true };
  const aliasRows = aliases.map((a) =>
    el("tr", { "data-alias": a.name, "data-model": a.model }, el("td", {}, a.model), el("td", {}, el("span", { class: "alias" }, a.name)), el("td", { class: "id" }, a.model_version_id), el("td", {}, when(a.updated_at))));
  // One column per version; one row per field, then per metric (the best value in bold).
  const metricNames = [...new Set(models.flatMap((m) => Object.keys(m.metrics || {})))].sort();
  const hp = (m) => (m.lineage && m.lineage.hyperparameters) || {};
  const rows = [
    ["model", (m) => m.model],
    ["aliases", (m) => m.aliases.map((a) => el("span", { class: "alias" }, a))],
    ["created", (m) => when(m.created_at)],
    ["base model", (m) => m.base_model],
    ["training job", (m) => m.training_job_id && el("a", { href: "#job=" + m.training_job_id, class: "id" }, short(m.training_job_id))],
    ["labels", (m) => (m.label_names || []).join(", ")],
    ["epochs · learning rate", (m) => `${hp(m).epochs ?? "–"} · ${hp(m).learning_rate ?? "–"}`],
  ].map(([label, cell]) => el("tr", {}, el("th", {}, label), models.map((m) => el("td", {}, cell(m)))));
  for (const name of metricNames) {
    const values = models.map((m) => (m.metrics || {})[name]);
    const best = Math.max(...values.filter((v) => typeof v === "number"));
    rows.push(el("tr", { "data-metric": name }, el("th", {}, name),
      values.map((v) => el("td", { class: "num" }, v === best && models.length > 1 ? el("strong", {}, num(v)) : num(v)))));
  }
  const header = el("tr", {}, el("th", {}, "version"), models.map((m) => el("th", { class: "id", "data-model-id": m.id }, short(m.id))));
  const side = el("table", { class: "models", id: "models-table" }, el("thead", {}, header), el("tbody", {}, rows));
  return {
    node: el("div", {},
      card(el("h1", {}, "Aliases"), aliases.length ? table(["model", "alias", "model version", "updated"], aliasRows, { id: "aliases-table" }) : el("p", { class: "muted" }, "No alias set.")),
      card(el("h1", {}, "Model versions"), el("div", { class: "scroll-x" }, side))),
    again: true,
  };
}

// ---- charts

/** Round numbers for axis ticks: [low, high, step] covering lo..hi in about 4 steps. */
function niceRange(lo, hi) {
  if (lo === hi) [lo, hi] = [lo - (Math.abs(lo) * 0.1 || 0.1), hi + (Math.abs(hi) * 0.1 || 0.1)];
  const raw = (hi - lo) / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  return [Math.floor(lo / step) * step, Math.ceil(hi / step) * step, step];
}

/** A line chart: series = [{ name, label, color?, points: [[x, y], ...] }], x being
 * epochs; `legend: false` when a table beside it says which line is which. */
function lineChart(id, title, series, { legend: withLegend = true } = {}) {
  const W = 420, H = 250, m = { l: 50, r: 16, t: 30, b: 58 };
  const all = series.flatMap((s) => s.points).filter((p) => typeof p[1] === "number");
  const xs = [...new Set(all.map((p) => p[0]))].sort((a, b) => a - b);
  let [x0, x1] = [xs[0], xs[xs.length - 1]];
  if (x0 === x1) [x0, x1] = [x0 - 0.5, x1 + 0.5];
  const [y0, y1, step] = niceRange(Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1])));
  const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const digits = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));

  const root = svg("svg", { id, class: "chart line-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    svg("text", { class: "title", x: m.l, y: 18 }, title));
  const grid = svg("g", { class: "grid" });
  const yAxis = svg("g", { class: "axis y-axis" }, svg("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b }));
  for (let i = 0; i <= Math.round((y1 - y0) / step); i++) {
    const v = y0 + i * step;
    grid.append(svg("line", { x1: m.l, y1: Y(v), x2: W - m.r, y2: Y(v) }));
    yAxis.append(svg("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end" }, v.toFixed(digits)));
  }
  const xAxis = svg("g", { class: "axis x-axis" }, svg("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b }));
  const every = Math.ceil(xs.length / 10);
  xs.filter((_, i) => i % every === 0).forEach((x) => {
    xAxis.append(svg("line", { x1: X(x), y1: H - m.b, x2: X(x), y2: H - m.b + 4 }));
    xAxis.append(svg("text", { x: X(x), y: H - m.b + 16, "text-anchor": "middle" }, x));
  });
  xAxis.append(svg("text", { x: (m.l + W - m.r) / 2, y: H - m.b + 30, "text-anchor": "middle" }, "epoch"));
  root.append(grid, yAxis, xAxis);

  const legend = svg("g", { class: "legend" });
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => typeof p[1] === "number");
    const color = s.color || COLORS[s.name] || "#333";
    const d = pts.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    root.append(svg("path", { class: "series", "data-series": s.name, "data-points": pts.length, d, stroke: color }));
    for (const [x, y] of pts) {
      root.append(svg("circle", { class: "point", "data-series": s.name, "data-x": x, "data-y": y, cx: X(x), cy: Y(y), r: 3.5, fill: color },
        svg("title", {}, `${s.label}, epoch ${x}: ${num(y)}`)));
    }
    const lx = m.l + i * 130;
    if (withLegend) legend.append(svg("line", { x1: lx, y1: H - 10, x2: lx + 18, y2: H - 10, stroke: color, "stroke-width": 3 }),
      svg("text", { x: lx + 24, y: H - 6, "data-series": s.name }, s.label));
  });
  root.append(legend);
  return root;
}

/** The confusion matrix (rows gold, columns predicted), shaded by the share of its gold row. */
function heatMap(report, epoch) {
  const labels = report.per_class.map((c) => c.label);
  const n = labels.length, size = 64, left = 96, top = 62;
  const W = left + n * size + 8, H = top + n * size + 8;
  const root = svg("svg", { id: "confusion", class: "heatmap", viewBox: `0 0 ${W} ${H}`, width: W, height: H, "data-epoch": epoch, "data-labels": labels.join(",") },
    svg("text", { class: "title", x: 0, y: 16 }, `Confusion matrix, epoch ${epoch}`),
    svg("text", { x: left + (n * size) / 2, y: 36, "text-anchor": "middle" }, "predicted →"),
    svg("text", { x: 4, y: top - 6 }, "gold ↓"));
  labels.forEach((label, i) => {
    root.append(svg("text", { x: left + i * size + size / 2, y: top - 8, "text-anchor": "middle" }, label));
    root.append(svg("text", { x: left - 8, y: top + i * size + size / 2 + 4, "text-anchor": "end" }, label));
  });
  report.confusion.forEach((row, g) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((count, p) => {
      const share = count / total;
      const x = left + p * size, y = top + g * size;
      root.append(
        svg("rect", { class: "cell", "data-gold": g, "data-predicted": p, "data-count": count, x, y, width: size - 2, height: size - 2, fill: heat(share) },
          svg("title", {}, `gold ${labels[g]}, predicted ${labels[p]}: ${count} (${Math.round(share * 100)}% of ${labels[g]})`)),
        svg("text", { class: share > 0.5 ? "cell-count light" : "cell-count", x: x + size / 2 - 1, y: y + size / 2 + 4, "text-anchor": "middle" }, count));
    });
  });
  return root;
}

/** White-blue scale for a share in [0, 1]. */
function heat(share) {
  const mix = (a, b) => Math.round(a + (b - a) * share);
  return `rgb(${mix(240, 30)},${mix(244, 58)},${mix(255, 138)})`;
}

// ---- start

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  document.getElementById("who").textContent = "";
  location.hash = "";
  show();
});
window.addEventListener("hashchange", show);
show();
