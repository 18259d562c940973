"use strict";
// The console: every value from the server reaches the page through textContent, never as HTML.
let SESSION = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function $(id) { return document.getElementById(id); }

async function api(method, path, body, raw) {
  const opts = {method, credentials: "same-origin", headers: {}};
  if (method !== "GET") opts.headers["X-CSRF-Token"] = SESSION.csrf;
  if (raw) { opts.body = raw.data; opts.headers["Content-Type"] = raw.type; opts.headers["X-Filename"] = raw.name; }
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  const res = await fetch(path, opts);
  if (res.status === 401) { window.location.assign("/login"); throw new Error("login required"); }
  let data = null;
  try { data = await res.json(); } catch (e) { data = {}; }
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function show(target, text, ok) {
  target.textContent = text;
  target.className = "message " + (ok ? "ok" : "error");
}

function describe(ev) {
  const skip = new Set(["event_id", "seq", "ts", "device_id", "type", "person_id", "name", "journal_id"]);
  return Object.entries(ev).filter(([k]) => !skip.has(k))
    .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ");
}

function eventItem(ev) {
  const li = el("li", null, "ev-" + ev.type);
  li.append(el("time", (ev.ts || "").replace("T", " ").slice(0, 19)), el("b", ev.type));
  const who = ev.name || ev.person_id || ev.user;
  if (who) li.append(el("span", who, "who"));
  if (ev.reason) li.append(el("span", ev.reason, "reason"));
  return li;
}

// ------------------------------------------------------------------ Live
function pageLive() {
  $("live-img").src = "/api/live.mjpg";
  const list = $("live-events");
  const add = (ev) => { list.prepend(eventItem(ev)); while (list.children.length > 30) list.lastChild.remove(); };
  api("GET", "/api/recent").then((events) => events.forEach(add));
  const source = new EventSource("/api/events");
  source.onmessage = (m) => add(JSON.parse(m.data));
  const refresh = async () => {
    try {
      const s = await api("GET", "/api/status");
      $("door-lock-state").textContent = s.door.lock +
        (s.door.unlock_reason ? " (" + s.door.unlock_reason + ")" : "");
      $("door-contact-state").textContent = s.door.door;
      $("lockdown-state").textContent = s.lockdown ? "ON" : "off";
      $("camera-fps").textContent = s.fps + " frames/s";
    } catch (e) { /* shown on next success */ }
  };
  refresh();
  setInterval(refresh, 1000);
}

// ------------------------------------------------------------------ Journal
function pageJournal() {
  let before = null;
  const params = () => {
    const p = new URLSearchParams();
    for (const [key, id] of [["since", "journal-since"], ["until", "journal-until"], ["person", "journal-person"],
                             ["type", "journal-type"]]) {
      const v = $(id).value.trim();
      if (v) p.set(key, v);
    }
    return p;
  };
  const load = async (more) => {
    const p = params();
    p.set("limit", "50");
    if (more && before) p.set("before", before);
    const body = $("journal-table").tBodies[0];
    if (!more) body.replaceChildren();
    try {
      const r = await api("GET", "/api/journal?" + p);
      for (const ev of r.events) {
        const tr = el("tr", null, "ev-" + ev.type);
        tr.append(el("td", (ev.ts || "").replace("T", " ").slice(0, 23)), el("td", ev.type),
                  el("td", ev.name || ev.person_id || ev.user || ""), el("td", describe(ev)));
        if (ev.type === "access_granted" && SESSION.role === "admin") {
          // "This was not them": the grant's face becomes a negative template of the person (docs/console.md)
          const b = el("button", "This was not them", "not-them");
          b.type = "button";
          b.dataset.eventId = ev.event_id;
          b.addEventListener("click", async () => {
            if (!window.confirm("Mark this grant as wrong? The face let in as " + (ev.name || ev.person_id) +
                                " will no longer be taken for them.")) return;
            try {
              const r = await api("POST", "/api/journal/not-them", {event_id: ev.event_id});
              b.replaceWith(el("span", "marked: not " + (r.name || r.person_id), "ok"));
            } catch (e) { b.replaceWith(el("span", e.message, "error")); }
          });
          tr.cells[3].append(" ", b);
        }
        body.append(tr);
      }
      before = r.next_before;
      $("journal-more").hidden = !before;
      $("journal-total").textContent = r.total + " matching events";
    } catch (e) { $("journal-total").textContent = e.message; }
    const csv = params();
    csv.set("limit", "100000");
    $("journal-csv").href = "/api/journal.csv?" + csv;
  };
  $("journal-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(false); });
  $("journal-more").addEventListener("click", () => load(true));
  load(false);
}

// ------------------------------------------------------------------ People
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
function scheduleToText(s) {
  if (!s) return "";
  return Object.entries(s).map(([d, ranges]) => d + " " + ranges.map((r) => r[0] + "-" + r[1]).join(", ")).join("\n");
}
function textToSchedule(text) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const m = line.match(/^([a-z]{3})(?:-([a-z]{3}))?\s+(.+)$/i);
    if (!m) throw new Error("schedule: '" + line + "' is not like 'mon-fri 08:00-18:00'");
    const a = DAYS.indexOf(m[1].toLowerCase()), b = m[2] ? DAYS.indexOf(m[2].toLowerCase()) : a;
    if (a < 0 || b < 0 || b < a) throw new Error("schedule: unknown day range in '" + line + "'");
    const ranges = m[3].split(",").map((r) => r.trim().split("-").map((t) => t.trim()));
    for (let d = a; d <= b; d++) out[DAYS[d]] = (out[DAYS[d]] || []).concat(ranges);
  }
  return Object.keys(out).length ? out : null;
}
function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" +
    pad(d.getMinutes());
}

function pagePeople() {
  let editing = null;  // id of the person in the dialog once saved
  let people = [];
  const message = $("people-message");
  const load = async () => {
    people = await api("GET", "/api/people?q=" + encodeURIComponent($("people-search").value));
    const body = $("people-table").tBodies[0];
    body.replaceChildren();
    for (const p of people) {
      const tr = el("tr");
      tr.dataset.id = p.id;
      const valid = (p.valid_from ? "from " + p.valid_from.slice(0, 16) : "") +
        (p.valid_until ? " until " + p.valid_until.slice(0, 16) : "");
      tr.append(el("td", p.id), el("td", p.name || ""), el("td", p.groups.join(", ")), el("td", valid || "always"),
                el("td", scheduleToText(p.schedule) || "any time"), el("td", p.templates));
      const actions = el("td");
      const edit = el("button", "Edit");
      edit.type = "button";
      edit.className = "edit";
      edit.addEventListener("click", () => openDialog(p));
      const remove = el("button", "Remove", "danger remove");
      remove.type = "button";
      remove.addEventListener("click", async () => {
        if (!window.confirm("Remove " + (p.name || p.id) + " and every photo template of theirs?")) return;
        const purge = window.confirm("Also delete their entries from the access journal?");
        try {
          await api("POST", "/api/people/" + encodeURIComponent(p.id) + "/remove", {purge_events: purge});
          show(message, "Removed " + p.id, true);
        } catch (e) { show(message, e.message, false); }
        load();
      });
      const exportData = el("button", "Export data", "export");  // subject access: all the door holds on them
      exportData.type = "button";
      exportData.addEventListener("click", async () => {
        try {
          const data = await api("POST", "/api/people/" + encodeURIComponent(p.id) + "/export");
          const link = el("a");
          link.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], {type: "application/json"}));
          link.download = "facegate-subject-" + p.id + ".json";
          link.click();
          URL.revokeObjectURL(link.href);
          show(message, "Exported " + p.id, true);
        } catch (e) { show(message, e.message, false); }
      });
      actions.append(edit, exportData, remove);
      tr.append(actions);
      body.append(tr);
    }
  };
  const openDialog = (p) => {
    editing = p ? p.id : null;
    $("person-title").textContent = p ? "Edit " + (p.name || p.id) : "Add person";
    $("person-id").value = p ? p.id : "";
    $("person-id").disabled = !!p;
    $("person-name").value = p ? p.name || "" : "";
    $("person-groups").value = p ? p.groups.join(", ") : "";
    $("person-valid-from").value = p ? localInput(p.valid_from) : "";
    $("person-valid-until").value = p ? localInput(p.valid_until) : "";
    $("person-schedule").value = p ? scheduleToText(p.schedule) : "";
    $("person-consent-how").value = "";
    $("person-consent-notice").value = "";
    $("person-message").textContent = "";
    $("btn-capture-open").disabled = !p;
    $("person-photo").disabled = !p;
    $("person-dialog").showModal();
  };
  $("btn-add-person").addEventListener("click", () => openDialog(null));
  $("person-close").addEventListener("click", () => { $("person-dialog").close(); load(); });
  $("person-save").addEventListener("click", async () => {
    const msg = $("person-message");
    try {
      const iso = (v) => (v ? new Date(v).toISOString() : null);
      const body = {
        id: $("person-id").value.trim(), name: $("person-name").value,
        groups: $("person-groups").value.split(",").map((g) => g.trim()).filter(Boolean),
        valid_from: iso($("person-valid-from").value), valid_until: iso($("person-valid-until").value),
        schedule: textToSchedule($("person-schedule").value),
      };
      const how = $("person-consent-how").value.trim(), notice = $("person-consent-notice").value.trim();
      if (how || notice) body.consent = {at: new Date().toISOString(), how: how, notice_version: notice};
      const path = editing ? "/api/people/" + encodeURIComponent(editing) : "/api/people";
      await api("POST", path, body);
      editing = body.id;
      $("person-id").disabled = true;
      $("btn-capture-open").disabled = false;
      $("person-photo").disabled = false;
      show(msg, "Saved. Add photos: capture from the door camera or upload.", true);
    } catch (e) { show(msg, e.message, false); }
  });
  $("person-photo").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    const msg = $("person-message");
    try {
      const r = await api("POST", "/api/people/" + encodeURIComponent(editing) + "/photo", undefined,
                          {data: file, type: file.type || "application/octet-stream", name: file.name});
      show(msg, r.accepted ? "Photo accepted (" + r.templates + " photos)" : "Refused: " + r.reason, r.accepted);
    } catch (e) { show(msg, e.message, false); }
    ev.target.value = "";
  });
  // Capture dialog: the unblurred view, quality polled while it is open.
  let timer = null;
  $("btn-capture-open").addEventListener("click", () => {
    $("capture-img").src = "/api/capture.mjpg";
    $("capture-result").textContent = "";
    $("capture-dialog").showModal();
    const poll = async () => {
      try {
        const q = await api("GET", "/api/capture/quality");
        const status = $("capture-status");
        status.textContent = q.ok ? "Good: ready to capture" : q.reason;
        status.className = "status " + (q.ok ? "ok" : "error");
        const dl = $("capture-quality");
        dl.replaceChildren();
        const rows = [["faces", q.faces]];
        if (q.quality) {
          rows.push(["face size", Math.round(q.quality.face_px) + " px"],
                    ["sharpness", q.quality.sharpness.toFixed(0)],
                    ["pose (yaw / pitch)", q.quality.yaw_deg.toFixed(0) + "° / " + q.quality.pitch_deg.toFixed(0) + "°"],
                    ["brightness", q.quality.brightness.toFixed(0)]);
        }
        rows.push(["liveness", q.liveness === null ? "n/a" : q.liveness]);
        for (const [k, v] of rows) dl.append(el("dt", k), el("dd", v));
      } catch (e) { /* next poll */ }
    };
    poll();
    timer = setInterval(poll, 400);
  });
  $("capture-dialog").addEventListener("close", () => { clearInterval(timer); $("capture-img").src = ""; });
  $("capture-close").addEventListener("click", () => $("capture-dialog").close());
  $("btn-capture").addEventListener("click", async () => {
    const out = $("capture-result");
    out.textContent = "Capturing…";
    try {
      const r = await api("POST", "/api/people/" + encodeURIComponent(editing) + "/capture", {});
      show(out, r.accepted ? "Captured: " + r.templates + " photos enrolled" : "Refused: " + r.reason, r.accepted);
    } catch (e) { show(out, e.message, false); }
  });
  $("people-search").addEventListener("input", () => load());
  $("people-zip").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    show(message, "Uploading " + file.name + "…", true);
    try {
      const r = await api("POST", "/api/people-bulk", undefined, {data: file, type: "application/zip", name: file.name});
      const refused = r.refused.map((x) => x.image + ": " + x.reason).join("; ");
      show(message, r.persons_enrolled + " persons enrolled, " + r.accepted + " photos accepted" +
           (refused ? "; refused: " + refused : ""), r.refused.length === 0);
    } catch (e) { show(message, e.message, false); }
    ev.target.value = "";
    load();
  });
  load();
}

// ------------------------------------------------------------------ Door
function pageDoor() {
  const message = $("door-message");
  const refresh = async () => {
    const s = await api("GET", "/api/status");
    $("door-page-lock").textContent = s.door.lock;
    $("door-page-lockdown").textContent = s.lockdown ? "ON" : "off";
  };
  const act = (id, path, body, text) => $(id).addEventListener("click", async () => {
    try { await api("POST", path, body); show(message, text, true); } catch (e) { show(message, e.message, false); }
    refresh();
  });
  act("btn-unlock", "/api/door/unlock", {}, "Unlocked");
  act("btn-lock", "/api/door/lock", {}, "Locked");
  act("btn-lockdown-on", "/api/door/lockdown", {on: true}, "Lockdown on: only the lockdown groups may enter");
  act("btn-lockdown-off", "/api/door/lockdown", {on: false}, "Lockdown off");
  refresh();
  setInterval(refresh, 1000);
}

// ------------------------------------------------------------------ System
async function pageSystem() {
  const s = await api("GET", "/api/system");
  const checks = $("system-checks").tBodies[0];
  for (const c of s.checks) {
    const tr = el("tr", null, c.ok ? "ok" : "fail");
    tr.append(el("td", c.check), el("td", c.ok ? "yes" : "NO"), el("td", c.detail), el("td", c.fix));
    checks.append(tr);
  }
  for (const [k, v] of Object.entries(s.versions)) $("system-versions").append(el("dt", k), el("dd", v));
  const models = $("system-models").tBodies[0];
  for (const m of s.models) {
    const tr = el("tr");
    tr.append(el("td", m.role), el("td", m.name), el("td", m.sha256, "mono"));
    models.append(tr);
  }
  const st = s.status;
  const op = st.operating_point || {};
  for (const k of ["threshold", "source", "operating_point", "far", "fpir", "fpir_predicted", "tar", "templates",
                   "persons"]) {
    $("system-threshold").append(el("dt", k), el("dd", op[k] === null || op[k] === undefined ? "-" : String(op[k])));
  }
  $("system-threshold-warning").textContent = op.warning || "";
  const fmt = (x) => x === null || x === undefined ? "-" : Number(x).toExponential(2);
  const groups = $("system-groups").tBodies[0];
  for (const g of s.groups) {
    const tr = el("tr", null, g.meets_far === false ? "fail" : (g.meets_far ? "ok" : ""));
    tr.append(el("td", String(g.far)), el("td", g.similarity.toFixed(4)), el("td", g.group), el("td", fmt(g.fmr)),
              el("td", g.fmr_ci95 ? fmt(g.fmr_ci95[0]) + " - " + fmt(g.fmr_ci95[1]) : "-"),
              el("td", g.false_matches + " / " + g.impostor_pairs),
              el("td", g.meets_far === null ? "too few pairs" : (g.meets_far ? "yes" : "NO")),
              el("td", g.door_at_or_above ? "yes" : "no"));
    groups.append(tr);
  }
  $("system-status").textContent = JSON.stringify({gallery: st.gallery, sync: s.sync, outbox: st.outbox,
    journal: st.journal, uptime_seconds: st.uptime_seconds, fps: st.fps, console: s.console}, null, 2);
}

async function main() {
  const res = await fetch("/api/session", {credentials: "same-origin"});
  if (!res.ok) { window.location.assign("/login"); return; }
  SESSION = await res.json();
  $("whoami").textContent = SESSION.user + " (" + SESSION.role + ")";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.role === "admin" && SESSION.role !== "admin") a.remove();
    else if (a.getAttribute("href") === "/" + document.body.dataset.page) a.className = "current";
  }
  $("btn-logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout", {}); } finally { window.location.assign("/login"); }
  });
  const page = document.body.dataset.page;
  $("page-" + page).hidden = false;
  ({live: pageLive, journal: pageJournal, people: pagePeople, door: pageDoor, system: pageSystem})[page]();
}
main();
