"use strict";
// The fleet console's one script. Everything a door or a person sent is put in the page with textContent,
// never as HTML: names, reasons and details are untrusted.
let session = null;
const page = document.body.dataset.page;
const $ = (id) => document.getElementById(id);
const RANK = {viewer: 0, operator: 1, admin: 2};

function say(text, bad) { const m = $("message"); m.textContent = text || ""; m.className = bad ? "message error" : "message"; }
function when(ts) { return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : ""; }

async function api(method, path, body, raw, headers) {
  const h = Object.assign({}, headers || {});
  if (method !== "GET") h["X-CSRF-Token"] = session ? session.csrf : "";
  let data = raw;
  if (body !== undefined) { data = JSON.stringify(body); h["Content-Type"] = "application/json"; }
  const res = await fetch(path, {method, headers: h, body: data, credentials: "same-origin"});
  let out = null;
  try { out = await res.json(); } catch (e) { out = null; }
  if (!res.ok) throw new Error((out && out.error) || `HTTP ${res.status}`);
  return out;
}

function cell(tr, text, id) { const td = document.createElement("td"); td.textContent = text == null ? "" : String(text); if (id) td.id = id; tr.appendChild(td); return td; }
function button(td, label, id, fn) { const b = document.createElement("button"); b.textContent = label; b.id = id; b.addEventListener("click", fn); td.appendChild(b); return b; }
function rows(table) { const tb = $(table).querySelector("tbody"); tb.replaceChildren(); return tb; }

async function loadDoors() {
  const doors = await api("GET", "/api/doors");
  const tb = rows("doors");
  for (const d of doors) {
    const tr = document.createElement("tr"); tr.id = `door-${d.door_id}`;
    cell(tr, d.door_id); cell(tr, d.group || "");
    cell(tr, d.online ? "online" : "offline", `door-${d.door_id}-state`);
    cell(tr, d.software || "");
    const s = d.sync || {};
    cell(tr, s.applied_version == null ? "none" : `v${s.applied_version} at ${when(s.applied_at)}`, `door-${d.door_id}-applied`);
    cell(tr, s.published_version == null ? "" : `v${s.published_version}${s.rejected_reason ? " (refused: " + s.rejected_reason + ")" : ""}`);
    cell(tr, (d.problems || []).join("; "), `door-${d.door_id}-problems`);
    const last = d.last_decision; cell(tr, last ? `${last.type} ${last.name || last.person_id || ""} ${last.ts || ""}` : "");
    const td = cell(tr, "");
    if (RANK[session.role] >= RANK.operator) {
      for (const action of ["unlock", "lock", "lockdown_on", "lockdown_off"]) {
        button(td, action, `door-${d.door_id}-${action}`, async () => {
          try { const r = await api("POST", `/api/doors/${encodeURIComponent(d.door_id)}/command`, {action}); say(`${action} sent to ${d.door_id}: ${r.sent ? "acknowledged by the broker" : "not acknowledged"}`); }
          catch (e) { say(e.message, true); }
        });
      }
    }
    if (RANK[session.role] >= RANK.admin) {
      button(td, "group…", `door-${d.door_id}-group`, async () => {
        const g = window.prompt("Door group (empty: none)", d.group || "");
        if (g === null) return;
        try { await api("POST", `/api/doors/${encodeURIComponent(d.door_id)}/group`, {group: g || null}); loadDoors(); }
        catch (e) { say(e.message, true); }
      });
    }
    tb.appendChild(tr);
  }
}

function list(text) { return text.split(",").map((s) => s.trim()).filter((s) => s); }

async function loadPeople() {
  const people = await api("GET", "/api/people");
  const tb = rows("people");
  for (const p of people) {
    const tr = document.createElement("tr"); tr.id = `person-${p.id}`;
    cell(tr, p.id); cell(tr, p.name || ""); cell(tr, p.templates); cell(tr, p.doors.join(", "));
    cell(tr, p.groups.join(", ")); cell(tr, `${p.valid_from || ""} – ${p.valid_until || ""}`);
    const td = cell(tr, "");
    button(td, "Edit", `person-${p.id}-edit`, () => {
      $("person-id").value = p.id; $("person-id").readOnly = true; $("person-name").value = p.name || "";
      $("person-doors").value = p.doors.join(", "); $("person-groups").value = p.groups.join(", ");
      $("person-from").value = p.valid_from || ""; $("person-until").value = p.valid_until || "";
    });
    button(td, "Remove", `person-${p.id}-remove`, async () => {
      if (!window.confirm(`Remove ${p.id} from every door?`)) return;
      try { await api("POST", `/api/people/${encodeURIComponent(p.id)}/remove`, {}); say(`${p.id} removed; doors are being updated`); loadPeople(); }
      catch (e) { say(e.message, true); }
    });
    tb.appendChild(tr);
  }
}

async function savePerson(ev) {
  ev.preventDefault();
  const id = $("person-id").value.trim();
  const editing = $("person-id").readOnly;
  const body = {name: $("person-name").value, doors: list($("person-doors").value), groups: list($("person-groups").value),
                valid_from: $("person-from").value.trim() || null, valid_until: $("person-until").value.trim() || null};
  try {
    if (editing) await api("POST", `/api/people/${encodeURIComponent(id)}`, body);
    else await api("POST", "/api/people", Object.assign({id}, body));
    const file = $("person-photo").files[0];
    let note = "saved";
    if (file) {
      const r = await api("POST", `/api/people/${encodeURIComponent(id)}/photo`, undefined, await file.arrayBuffer(),
                          {"Content-Type": "application/octet-stream", "X-Filename": file.name});
      note = r.accepted ? "saved with photo" : `saved; photo refused: ${r.reason}`;
      if (!r.accepted) { say(`${id}: ${note}`, true); loadPeople(); return; }
    }
    say(`${id}: ${note}; doors are being updated`);
    $("person-form").reset(); $("person-id").readOnly = false; $("person-doors").value = "*";
    loadPeople();
  } catch (e) { say(e.message, true); }
}

function journalQuery() {
  const q = new URLSearchParams();
  for (const k of ["since", "until", "door", "person", "type"]) { const v = $(`journal-${k}`).value.trim(); if (v) q.set(k, v); }
  return q.toString();
}

async function loadJournal(ev) {
  if (ev) ev.preventDefault();
  const q = journalQuery();
  $("journal-csv").href = `/api/journal.csv?${q}`;
  try {
    const data = await api("GET", `/api/journal?${q}`);
    const tb = rows("journal");
    for (const e of data.events) {
      const tr = document.createElement("tr"); tr.className = `event-${e.type}`; tr.dataset.door = e.device_id;
      cell(tr, e.ts); cell(tr, e.device_id); cell(tr, e.type); cell(tr, e.name || e.person_id || "");
      const rest = Object.assign({}, e); for (const k of ["ts", "device_id", "type", "name", "person_id", "event_id", "seq"]) delete rest[k];
      cell(tr, JSON.stringify(rest));
      const td = cell(tr, "");
      if (e.type === "access_granted" && RANK[session.role] >= RANK.operator) {
        button(td, "false accept", `report-${e.event_id}`, async () => {
          try { await api("POST", `/api/journal/${e.event_id}/false-accept`, {}); say("reported"); } catch (err) { say(err.message, true); }
        });
      }
      tb.appendChild(tr);
    }
  } catch (e) { say(e.message, true); }
}

async function loadAlerts() {
  const alerts = await api("GET", "/api/alerts");
  const tb = rows("alerts");
  for (const a of alerts) {
    const tr = document.createElement("tr"); tr.className = `alert-${a.kind}`;
    cell(tr, when(a.ts)); cell(tr, a.door_id || ""); cell(tr, a.kind); cell(tr, a.detail);
    const td = cell(tr, a.acknowledged_by ? `acknowledged by ${a.acknowledged_by}` : "");
    if (!a.acknowledged_by && RANK[session.role] >= RANK.operator) {
      button(td, "Acknowledge", `alert-${a.id}-ack`, async () => { await api("POST", `/api/alerts/${a.id}/ack`, {}); loadAlerts(); });
    }
    tb.appendChild(tr);
  }
}

async function loadSystem() {
  $("system").textContent = JSON.stringify(await api("GET", "/api/system"), null, 2);
  const tb = rows("audit");
  for (const a of await api("GET", "/api/audit")) {
    const tr = document.createElement("tr");
    cell(tr, when(a.ts)); cell(tr, a.user); cell(tr, a.action); cell(tr, JSON.stringify(a.detail)); tb.appendChild(tr);
  }
}

async function main() {
  try { session = await api("GET", "/api/session"); } catch (e) { window.location.assign("/login"); return; }
  $("who").textContent = `${session.user} (${session.role})`;
  $("logout").addEventListener("click", async () => { await api("POST", "/api/logout", {}); window.location.assign("/login"); });
  $(`page-${page}`).hidden = false;
  const loaders = {doors: loadDoors, people: loadPeople, journal: loadJournal, alerts: loadAlerts, system: loadSystem};
  if (page === "people") $("person-form").addEventListener("submit", savePerson);
  if (page === "journal") $("journal-form").addEventListener("submit", loadJournal);
  const load = loaders[page];
  try { await load(); } catch (e) { say(e.message, true); }
  if (page === "doors" || page === "alerts") setInterval(() => load().catch((e) => say(e.message, true)), 2000);
}
main();
