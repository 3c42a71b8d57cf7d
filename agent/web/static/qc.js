// QC page: polls /api/qc/... every second and redraws; no framework, no build step.
// Every value from the agent is put on the page with textContent (never as HTML).
"use strict";

const POLL_MS = 1000;
const UGY_M2_PER_GY_M2 = 1e6; // the page shows DAP in µGy·m², the API speaks Gy·m²
const TECHNIQUE = ["set_kvp", "set_ma", "set_mas", "set_time_ms", "sid_mm", "filtration_mm_al", "field_area_cm2",
  "displayed_air_kerma_rate_mgy_per_min", "displayed_air_kerma_mgy", "high_level_control", "phantom_thickness_mm"];
const SOURCES = {dicom: "from DICOM", manual: "typed in", corrected: "corrected"};
const state = {ref: null, session: null, sessionKey: "", choicesKey: "", editing: null};

const $ = (id) => document.getElementById(id);
// Every write carries the page's CSRF token (the server refuses writes without it, from the room PC too).
const CSRF = document.querySelector('meta[name="csrf-token"]').content;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, body) {
  const options = body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  if (response.status === 401) { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function fmt(value, scale = 1) {
  if (value === null || value === undefined) return "–";
  return String(Number((value * scale).toPrecision(4)));
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit",
    hour12: false}) : "";
}

function stamp(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const day = d.toLocaleDateString("sv-SE"); // YYYY-MM-DD
  return `${day} ${clock(iso)}`;
}

function say(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

// ---- overview: instruments, start form, sessions --------------------------------------------------------------------
function renderStartForm(overview) {
  const select = $("test_type");
  state.labels = Object.fromEntries(overview.test_types.map((t) => [t.id, t.label]));
  if (!select.options.length) {
    for (const t of overview.test_types) select.append(el("option", {value: t.id, text: t.label}));
  }
  const key = JSON.stringify(overview.instruments.map((i) => [i.id, i.session]));
  if (key === state.choicesKey) return; // keep what the technologist ticked
  state.choicesKey = key;
  const box = $("instrument-choices");
  const ticked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren();
  for (const inst of overview.instruments) {
    const input = el("input", {type: "checkbox", name: "instrument", value: inst.id, id: `choice-${inst.id}`});
    input.checked = !inst.session && (ticked.has(inst.id) || overview.instruments.length === 1);
    input.disabled = Boolean(inst.session);
    const note = inst.session ? ` (in session ${inst.session})` : ` (${inst.driver})`;
    box.append(el("label", {class: "choice", for: input.id}, input, el("span", {text: inst.id + note})));
  }
  if (!overview.instruments.length) box.append(el("p", {text: "No instruments configured ([[instruments]])."}));
}

function renderInstruments(list) {
  $("instruments").replaceChildren(...list.map((inst) => {
    const age = inst.last_reading_age_s === null ? "no reading yet" :
      `last reading ${Math.round(inst.last_reading_age_s)} s ago`;
    const detail = inst.state === "ok" ? age : (inst.last_error || age);
    return el("li", {class: `instrument ${inst.state}`},
      el("span", {class: "badge", text: inst.state.toUpperCase()}),
      el("strong", {text: inst.id}), el("span", {class: "meta", text: ` ${inst.driver} · ${detail}`}));
  }));
}

function renderDue(tests) {
  $("due-panel").hidden = !tests.length;
  $("due").replaceChildren(...tests.map((t) => {
    const when = t.due_at === null ? "never passed" :
      t.days_left < 0 ? `overdue since ${t.due_at.slice(0, 10)}` : `due ${t.due_at.slice(0, 10)} (${t.days_left} d)`;
    const last = t.last_verdict && t.last_verdict !== "pass" ? ` · last session ${t.last_verdict}` : "";
    return el("li", {class: `due-item ${t.status}`, "data-test": t.test_type},
      el("span", {class: `badge ${t.status}`, text: t.status.toUpperCase()}),
      el("span", {text: ` ${(state.labels || {})[t.test_type] || t.test_type} · every ${t.interval_days} d · ` +
        when + last}));
  }));
}

function renderSessions(overview) {
  const items = [...overview.open, ...overview.recent].map((s) => {
    const verdict = s.state === "discarded" ? "discarded" : (s.verdict || "incomplete");
    const pick = el("button", {type: "button", class: "pick", onclick: () => { state.ref = s.ref; refresh(); }},
      el("span", {class: `badge ${verdict}`, text: verdict.toUpperCase()}),
      el("span", {text: ` ${(state.labels || {})[s.test_type] || s.test_type} · ${s.operator} · ` +
        `${s.n_exposures} exposures · started ${stamp(s.started_at)}` +
        (s.ended_at ? ` · ${s.state} ${stamp(s.ended_at)}` : ` · ${s.state}`)}));
    return el("li", {}, pick, el("a", {href: `/qc/report/${s.ref}`, text: "report"}));
  });
  $("sessions").replaceChildren(...items);
  if (!state.ref && overview.open.length) state.ref = overview.open[0].ref;
}

// ---- one session ----------------------------------------------------------------------------------------------------
function exposureRow(e, open) {
  const t = e.technique, m = e.measured;
  let source = t.source ? SOURCES[t.source] + (t.confirmed ? " ✓" : " – not confirmed") : "none";
  const dicom = t.dicom_reported || {};
  const changed = TECHNIQUE.filter((k) => k in dicom && dicom[k] !== t[k]);
  if (changed.length) source += ` (DICOM: ${changed.map((k) => `${k.replace("set_", "")} ${fmt(dicom[k])}`).join(", ")})`;
  const cells = [e.number, clock(e.measured_at), fmt(t.set_kvp), fmt(t.set_ma), fmt(t.set_mas), fmt(t.set_time_ms),
    fmt(t.dicom_dap_gy_m2, UGY_M2_PER_GY_M2), fmt(m.kvp), fmt(m.air_kerma_ugy), fmt(m.exposure_time_ms),
    fmt(m.hvl_mm_al), fmt(m.dap_gy_m2, UGY_M2_PER_GY_M2), source];
  const row = el("tr", {class: t.source ? "" : "missing"}, ...cells.map((c) => el("td", {text: String(c)})));
  const flags = e.flags || [];
  row.append(el("td", {class: flags.length ? "flags flagged" : "flags",
    text: flags.length ? flags.join(", ") + (Object.keys(e.excluded || {}).length ? " (excluded)" : "") : "–"}));
  const actions = el("td", {class: "row-actions"});
  if (open && t.source && !t.confirmed) {
    actions.append(el("button", {type: "button", class: "small go", text: "Confirm",
      onclick: () => act(api(`/api/qc/sessions/${state.ref}/exposures/${e.number}/technique`, {}))}));
  }
  if (open) actions.append(el("button", {type: "button", class: "small plain", text: t.source ? "Correct" : "Enter",
    onclick: () => openEdit(e)}));
  row.append(actions);
  return row;
}

function criterionItem(c) {
  const outcome = !c.applies ? "n/a" : c.passed === true ? "pass" : c.passed === false ? "fail" :
    c.invalid ? "invalid" : "incomplete";
  const value = c.value === null ? "" : ` — ${fmt(c.value)} vs limit ${fmt(c.limit)} ${c.unit === "1" ? "" : c.unit}`;
  return el("li", {class: outcome}, el("span", {class: `badge ${outcome}`, text: outcome.toUpperCase()}),
    el("span", {text: ` ${c.subject}: ${c.rule}${value}${c.reason ? " (" + c.reason + ")" : ""}` +
      (c.source ? ` · limit: ${c.source}` : "")}));
}

function renderSession(s) {
  state.session = s;
  $("session").hidden = false;
  const key = JSON.stringify(s);
  if (key === state.sessionKey) return; // unchanged: keep the rows (and a finger on a button) where they are
  state.sessionKey = key;
  const open = s.state === "open";
  const result = s.result || {verdict: "incomplete", criteria: []};
  $("s-title").textContent = `${(state.labels || {})[s.test_type] || s.test_type} · ${s.ref}`;
  const unit = s.unit || {};
  const unitText = [unit.unit_id, unit.manufacturer, unit.model, unit.serial_number && `SN ${unit.serial_number}`,
    unit.station_name].filter(Boolean).join(" ");
  $("s-meta").textContent = `${s.instruments.join(", ")} · operator ${s.operator} · started ${stamp(s.started_at)}` +
    (unitText ? ` · unit ${unitText}` : "") + (open ? "" : ` · ${s.state}${s.published ? ", published" : ""}`);
  $("review").hidden = s.state !== "finished";
  const review = s.review;
  $("review-done").textContent = review ? `Signed off by ${review.reviewed_by} on ${stamp(review.reviewed_at)}` +
    (review.comment ? `: ${review.comment}` : "") : "Not reviewed yet.";
  $("verdict").textContent = result.verdict.toUpperCase();
  $("verdict").className = `verdict ${result.verdict}`;
  $("s-reason").textContent = result.reason || "";
  $("exposures").tBodies[0].replaceChildren(...s.exposures.map((e) => exposureRow(e, open)));
  $("no-exposures").hidden = s.exposures.length > 0;
  $("criteria").replaceChildren(...result.criteria.map(criterionItem));
  $("finish").hidden = $("discard").hidden = !open;
  $("confirm-all").hidden = !open || !s.exposures.some((e) => e.technique.source === "dicom" && !e.technique.confirmed);
  $("report").href = `/qc/report/${s.ref}`;
  $("report-pdf").href = `/qc/report/${s.ref}.pdf`;
}

// ---- actions --------------------------------------------------------------------------------------------------------
async function act(promise) {
  try {
    const session = await promise;
    say("");
    if (session && session.ref) { state.ref = session.ref; renderSession(session); }
  } catch (err) {
    say(err.message);
  }
  refresh();
}

function openEdit(e) {
  state.editing = e.number;
  const form = $("edit-form");
  for (const key of TECHNIQUE) form.elements[key].value = e.technique[key] ?? "";
  const dap = e.technique.dicom_dap_gy_m2;
  form.elements.dicom_dap_ugy_m2.value = dap === null || dap === undefined ? "" : fmt(dap, UGY_M2_PER_GY_M2);
  form.elements.fill_missing.checked = false;
  $("edit-title").textContent = `Set technique of exposure ${e.number}`;
  $("edit").showModal();
}

function editedValues(form) {
  const number = (name) => form.elements[name].value.trim() === "" ? null : Number(form.elements[name].value);
  const values = Object.fromEntries(TECHNIQUE.map((key) => [key, number(key)]));
  const dap = number("dicom_dap_ugy_m2");
  values.dicom_dap_gy_m2 = dap === null ? null : dap / UGY_M2_PER_GY_M2;
  return values;
}

async function saveEdit(event) {
  event.preventDefault();
  const form = $("edit-form"), values = editedValues(form), base = `/api/qc/sessions/${state.ref}/exposures`;
  const targets = [state.editing];
  if (form.elements.fill_missing.checked) {
    targets.push(...state.session.exposures.filter((e) => !e.technique.source && e.number !== state.editing)
      .map((e) => e.number));
  }
  $("edit").close();
  for (const number of targets) await act(api(`${base}/${number}/technique`, values));
}

function start(event) {
  event.preventDefault();
  const instruments = [...document.querySelectorAll("#instrument-choices input:checked")].map((i) => i.value);
  act(api("/api/qc/sessions", {test_type: $("test_type").value, instruments, operator: $("operator").value}));
}

// ---- polling --------------------------------------------------------------------------------------------------------
async function refresh() {
  try {
    const overview = await api("/api/qc/overview");
    renderStartForm(overview);
    renderInstruments(overview.instruments);
    renderSessions(overview);
    renderDue(overview.due || []);
    if (state.ref) renderSession(await api(`/api/qc/sessions/${state.ref}`));
    $("link").textContent = `updated ${clock(new Date().toISOString())}`;
    $("link").className = "link ok";
  } catch (err) {
    $("link").textContent = `agent not answering: ${err.message}`;
    $("link").className = "link down";
  }
}

$("start-form").addEventListener("submit", start);
$("edit-form").addEventListener("submit", saveEdit);
$("edit-cancel").addEventListener("click", () => $("edit").close());
$("finish").addEventListener("click", () => act(api(`/api/qc/sessions/${state.ref}/finish`, {})));
$("review-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act(api(`/api/qc/sessions/${state.ref}/review`,
    {reviewed_by: $("reviewed_by").value, comment: $("review_comment").value}));
});
$("confirm-all").addEventListener("click", () => act(api(`/api/qc/sessions/${state.ref}/confirm`, {})));
$("discard").addEventListener("click", () => {
  if (confirm("Discard this session? It will not be published.")) act(api(`/api/qc/sessions/${state.ref}/discard`, {}));
});
refresh();
setInterval(refresh, POLL_MS);
