"""The data viewer's inline CSS and JavaScript (:mod:`sedi.report.viewer` writes them into the page).

The script reads the run's data from the page's ``<script type="application/json" id="sedi-data">`` tag and
filters it in memory, drawing at most :data:`PAGE_SIZE` table rows at a time whatever the run's size. Measured
with ``tests/test_viewer.py`` (headless chromium, 2-core shared machine): 50,000 candidates with outputs of about
350 characters make a 23 MB page, written in 1.1-1.6 s, whose first page shows 0.6 s after it is opened; a search
over every text answers in under a second. Every text from the run goes into the page through ``textContent``
(``el`` below), never as markup, so a task that contains HTML shows as text.

Candidate rows are arrays, in the order of :data:`sedi.report.viewer.CANDIDATE_FIELDS`; training signals are
arrays in the order of :data:`sedi.store.signals.SIGNAL_COLUMNS`.
"""

PAGE_SIZE = 100

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 1em 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0.2em 0; } h2 { font-size: 1.15em; margin: 0.8em 0 0.3em; }
.tabs button { font: inherit; padding: 0.35em 1em; border: 1px solid #bbb; background: #f4f4f4; cursor: pointer; }
.tabs button.on { background: #fff; border-bottom-color: #fff; font-weight: 600; }
.filters { display: flex; flex-wrap: wrap; gap: 0.8em; align-items: center; margin: 0.8em 0; }
.filters label { display: flex; gap: 0.3em; align-items: center; }
input[type=search] { min-width: 22em; padding: 0.25em 0.4em; }
.chip { background: #eef3fb; border: 1px solid #9bb6df; border-radius: 1em; padding: 0.1em 0.7em; }
.pager { display: flex; gap: 0.8em; align-items: center; margin: 0.4em 0; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border-bottom: 1px solid #e2e2e2; padding: 0.3em 0.45em; text-align: left; vertical-align: top; }
th { background: #fafafa; position: sticky; top: 0; }
td.text { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
tr.row, tr.seed { cursor: pointer; } tr.row:hover, tr.seed:hover { background: #f6f9ff; }
.v { border-radius: 0.3em; padding: 0 0.4em; font-size: 0.9em; }
.v-kept { background: #dff3e2; color: #145c22; } .v-rejected { background: #fbe3e1; color: #8a1c12; }
.v-pending { background: #fff3d6; color: #7a5600; }
.card { background: #fcfcfc; border-left: 3px solid #9bb6df; padding: 0.3em 0.8em; }
dl { display: grid; grid-template-columns: 14em 1fr; gap: 0.25em 1em; margin: 0.3em 0; }
dt { color: #555; } dd { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
ol.ctx { margin: 0; padding-left: 1.4em; white-space: normal; }
.empty { color: #777; font-style: italic; } .muted { color: #666; }
"""

JS = """
"use strict";
const D = JSON.parse(document.getElementById("sedi-data").textContent);
const PAGE = D.page_size;
const [ID, ROUND, VERDICT, RULE, INS, INP, OUT, DETAIL, CTX, PROBLEM, ORIG] = D.fields.map((_, i) => i);
const C = D.candidates;
const byId = new Map(C.map((c, i) => [c[ID], i]));
const $ = (id) => document.getElementById(id);
const LABELS = {
  rouge: "ROUGE-L score", nearest: "Nearest instruction", cosine: "Cosine similarity (embedding)",
  nearest_by_embedding: "Nearest by embedding", matched: "Evaluation item it copies", measure: "Matched by",
  score: "Match score", problem: "Problem",
};

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.onclick = v; else if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
const clip = (t, n) => (t.length > n ? t.slice(0, n - 1) + "\\u2026" : t);
const num = (x) => (x === null || x === undefined ? "\\u2013" : Number(x).toPrecision(4));
const badge = (v) => el("span", {class: "v v-" + v}, v);

function seedText(id) {
  if (D.seeds[id]) return D.seeds[id][0];
  const m = /^machine-(\\d+)$/.exec(id);
  return m && byId.has(Number(m[1])) ? C[byId.get(Number(m[1]))][INS] : "(text not recorded)";
}

// Lineage: which candidates each shown task's prompts produced.
const lineage = new Map(Object.keys(D.seeds).map((id) => [id, []]));
C.forEach((c, i) => {
  for (const id of new Set(D.contexts[c[CTX]])) {
    if (!lineage.has(id)) lineage.set(id, []);
    lineage.get(id).push(i);
  }
});
function tally(indices) {
  const t = {kept: 0, rejected: 0, pending: 0};
  for (const i of indices) t[C[i][VERDICT]] = (t[C[i][VERDICT]] || 0) + 1;
  return t;
}
const seedCounts = new Map([...lineage].map(([id, kids]) => [id, tally(kids)]));
const seedIds = [...lineage.keys()].sort((a, b) => lineage.get(b).length - lineage.get(a).length);

function pager(prefix, columns, items, drawRow) {
  let page = 0, shown = [];
  const body = $(prefix + "-body"), info = $(prefix + "-info"), prev = $(prefix + "-prev"), next = $(prefix + "-next");
  function draw() {
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.max(0, Math.min(page, pages - 1));
    body.replaceChildren();
    for (const item of shown.slice(page * PAGE, (page + 1) * PAGE)) drawRow(item, body);
    if (!shown.length) body.append(el("tr", {}, el("td", {colspan: columns, class: "empty"}, "Nothing matches.")));
    const first = shown.length ? page * PAGE + 1 : 0, last = Math.min(shown.length, (page + 1) * PAGE);
    info.textContent = `${first}\\u2013${last} of ${shown.length} \\u00b7 page ${page + 1} of ${pages}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  prev.onclick = () => { page -= 1; draw(); };
  next.onclick = () => { page += 1; draw(); };
  return { refresh() { shown = items(); page = 0; draw(); } };
}

function signalsText(s) {
  const parts = [];
  if (s[1] !== null) {
    parts.push(`round ${s[0]}, step ${s[1]}`, `step loss ${num(s[2])}`, `grad norm ${num(s[3])}`);
    parts.push(s[4] ? "attractive batch (its tasks were promoted)" : "not an attractive batch");
  }
  if (s[5] !== null) parts.push(`own loss ${num(s[5])}`);
  return parts.join(" \\u00b7 ");
}

function detail(i) {
  const c = C[i], dl = el("dl");
  const add = (k, v) => { if (v !== null && v !== undefined && v !== "") dl.append(el("dt", {}, k), el("dd", {}, v)); };
  add("Candidate", `${c[ID]} (round ${c[ROUND]})`);
  add("Instruction", c[INS]);
  add("Input", c[INP]);
  add("Output", c[OUT]);
  if (c[ORIG] !== null) add("Output before repair", c[ORIG] || "(none)");
  add("Problem", c[PROBLEM]);
  add("Verdict", c[RULE] ? `${c[VERDICT]} by rule ${c[RULE]}` : c[VERDICT]);
  const rank = (k) => (k in LABELS ? Object.keys(LABELS).indexOf(k) : 99);  // the score before the text it was for
  for (const [k, v] of Object.entries(c[DETAIL] || {}).sort((a, b) => rank(a[0]) - rank(b[0]))) {
    add(LABELS[k] || k, typeof v === "object" ? JSON.stringify(v) : String(v));
  }
  const shown = D.contexts[c[CTX]];
  const list = el("ol", {class: "ctx"});
  for (const id of shown) {
    const go = (e) => { e.preventDefault(); showSeed(id); };
    list.append(el("li", {}, el("a", {href: "#", class: "seed-link", onclick: go}, id), " ", clip(seedText(id), 300)));
  }
  add("Its prompt showed", shown.length ? list : "(no in-context tasks recorded)");
  const s = D.signals[c[ID]];
  add("Training signals", s ? signalsText(s) : "not trained (yet)");
  return el("div", {class: "card"}, dl);
}

function candidateRow(i, body) {
  const c = C[i];
  const tr = el("tr", {class: "row", "data-id": c[ID], "data-verdict": c[VERDICT]},
    el("td", {}, c[ID]), el("td", {}, c[ROUND]), el("td", {}, badge(c[VERDICT])), el("td", {}, c[RULE] || ""),
    el("td", {class: "text", title: clip(c[INS], 500)}, c[INS]), el("td", {class: "text"}, c[INP]),
    el("td", {class: "text"}, c[OUT]));
  tr.onclick = () => {
    const open = tr.nextElementSibling;
    if (open && open.classList.contains("detail")) open.remove();
    else tr.after(el("tr", {class: "detail"}, el("td", {colspan: 7}, detail(i))));
  };
  body.append(tr);
}

// The candidates table and its filters.
const F = {verdict: "", rule: "", round: "", search: "", seed: null};
let hay = null;
function matching() {
  const q = F.search.trim().toLowerCase();
  if (q && !hay) hay = C.map((c) => (c[INS] + "\\n" + c[INP] + "\\n" + c[OUT]).toLowerCase());
  const out = [];
  for (const i of F.seed === null ? C.keys() : lineage.get(F.seed)) {
    const c = C[i];
    if ((F.verdict && c[VERDICT] !== F.verdict) || (F.round && String(c[ROUND]) !== F.round)) continue;
    if (F.rule && (c[RULE] || "-") !== F.rule) continue;
    if (!q || hay[i].includes(q)) out.push(i);
  }
  return out;
}
const table = pager("cand", 7, matching, candidateRow);

function options(select, counts, label) {
  const order = (a, b) => String(a[0]).localeCompare(String(b[0]), "en", {numeric: true});
  for (const [value, n] of [...counts].sort(order)) {
    select.append(el("option", {value: value}, `${label(value)} (${n})`));
  }
}
function countBy(key) {
  const m = new Map();
  for (const c of C) m.set(key(c), (m.get(key(c)) || 0) + 1);
  return m;
}
options($("f-verdict"), countBy((c) => c[VERDICT]), (v) => v);
options($("f-rule"), countBy((c) => c[RULE] || "-"), (v) => (v === "-" ? "(no rule)" : v));
options($("f-round"), countBy((c) => String(c[ROUND])), (v) => "round " + v);
for (const key of ["verdict", "rule", "round"]) {
  $("f-" + key).onchange = (e) => { F[key] = e.target.value; table.refresh(); };
}
let typing = null;
$("f-search").oninput = (e) => {
  clearTimeout(typing);
  typing = setTimeout(() => { F.search = e.target.value; table.refresh(); }, 120);
};
function setSeedFilter(id) {
  F.seed = id;
  $("f-seed").hidden = id === null;
  $("f-seed-name").textContent = id === null ? "" : `${id}: ${clip(seedText(id), 80)}`;
  table.refresh();
}
$("f-seed-clear").onclick = () => setSeedFilter(null);

// The lineage view: every task a prompt showed, and what the prompts that showed it produced.
let seedQuery = "";
function seedRow(id, body) {
  const t = seedCounts.get(id), origin = D.seeds[id] ? D.seeds[id][1] : "kept task";
  const tr = el("tr", {class: "seed", "data-seed": id}, el("td", {class: "text"}, id), el("td", {}, origin),
    el("td", {class: "text"}, seedText(id)), el("td", {}, lineage.get(id).length), el("td", {}, t.kept),
    el("td", {}, t.rejected));
  tr.onclick = () => showSeed(id);
  body.append(tr);
}
const seedTable = pager("seeds", 6, () => {
  const q = seedQuery.trim().toLowerCase();
  return q ? seedIds.filter((id) => (id + "\\n" + seedText(id)).toLowerCase().includes(q)) : seedIds;
}, seedRow);
$("seed-search").oninput = (e) => { seedQuery = e.target.value; seedTable.refresh(); };
let picked = null;
const kids = pager("kids", 7, () => (picked === null ? [] : lineage.get(picked) || []), candidateRow);

function showSeed(id) {
  picked = id;
  const t = seedCounts.get(id) || {kept: 0, rejected: 0, pending: 0}, n = (lineage.get(id) || []).length;
  $("seed-picked").hidden = false;
  $("seed-title").textContent = `${id}: ${seedText(id)}`;
  $("seed-counts").textContent =
    `Prompts that showed it produced ${n} tasks: ${t.kept} kept, ${t.rejected} rejected, ${t.pending || 0} pending.`;
  kids.refresh();
  tab("lineage");
  $("seed-picked").scrollIntoView();
}
$("seed-filter").onclick = () => { setSeedFilter(picked); tab("candidates"); };

function tab(name) {
  for (const v of ["candidates", "lineage"]) {
    $("view-" + v).hidden = v !== name;
    $("tab-" + v).classList.toggle("on", v === name);
  }
  window.scrollTo(0, 0);
}
$("tab-candidates").onclick = () => tab("candidates");
$("tab-lineage").onclick = () => tab("lineage");

const all = tally(C.keys());
$("summary").textContent = `${C.length} candidates: ${all.kept} kept, ${all.rejected} rejected, ` +
  `${all.pending} pending; ${lineage.size} tasks shown in prompts. Click a row for its details.`;
table.refresh();
seedTable.refresh();
"""
