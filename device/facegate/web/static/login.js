"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  const res = await fetch("/api/login", {
    method: "POST", headers: {"Content-Type": "application/json"}, credentials: "same-origin",
    body: JSON.stringify({user: document.getElementById("login-user").value,
                          password: document.getElementById("login-password").value}),
  });
  if (res.ok) { window.location.assign("/live"); return; }
  let msg = "Login failed";
  try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
  error.textContent = msg;
});
