"use strict";
const msg = document.getElementById("terminal-message");
const hint = document.getElementById("terminal-hint");
const arrow = document.getElementById("terminal-arrow");
async function poll() {
  try {
    const res = await fetch("/terminal/state", {cache: "no-store"});
    if (res.ok) {
      const s = await res.json();
      msg.textContent = s.message;
      msg.className = "kind-" + s.kind;
      hint.textContent = s.hint || "";
      arrow.textContent = s.arrow || "";
    }
  } catch (e) { /* the service restarts: keep trying */ }
  setTimeout(poll, 300);
}
poll();
// A stream cut by a restart comes back by itself.
const img = document.getElementById("terminal-img");
img.addEventListener("error", () => setTimeout(() => { img.src = "/terminal/stream.mjpg?" + Date.now(); }, 2000));
