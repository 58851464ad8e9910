// fauxscan review: keyboard shortcuts on item pages, live figures on the jobs page. No inline script (CSP).
"use strict";

const DECISION_KEYS = { f: "fake", r: "real", u: "unsure" };
const LINK_KEYS = { j: "next", k: "prev", s: "skip" };

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Enter" && event.target.closest("#decide input")) {
    event.preventDefault(); // a decision is only ever a chosen button or key, never Enter in the note
    return;
  }
  if (event.target.closest("input, textarea, select")) return;
  const keys = document.getElementById("keys");
  if (keys && (event.key === "?" || (event.key === "Escape" && !keys.hidden))) {
    event.preventDefault();
    keys.hidden = event.key === "Escape" ? true : !keys.hidden;
    return;
  }
  const decision = DECISION_KEYS[event.key];
  if (decision) {
    const button = document.querySelector(`#decide button[value="${decision}"]`);
    if (button) { event.preventDefault(); button.click(); }
    return;
  }
  if (event.key === "z") {
    const undo = document.getElementById("undo");
    if (undo) { event.preventDefault(); undo.click(); }
    return;
  }
  const link = LINK_KEYS[event.key] && document.getElementById(LINK_KEYS[event.key]);
  if (link) { event.preventDefault(); window.location.assign(link.href); }
}

async function refreshJobs(table) {
  try {
    const response = await fetch("/api/jobs", { credentials: "same-origin" });
    if (!response.ok) return;
    for (const job of await response.json()) {
      const row = table.querySelector(`tr[data-job="${job.job_id}"]`);
      if (!row) continue;
      for (const cell of row.querySelectorAll("[data-field]")) {
        const value = job[cell.dataset.field];
        if (cell.querySelector("a")) cell.querySelector("a").textContent = String(value ?? "");
        else cell.textContent = value === null || value === undefined ? "" : String(value);
      }
    }
  } catch (error) {
    // the server is away for a moment: try again at the next tick
  }
}

document.addEventListener("keydown", onKey);
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("jobs");
  if (table) setInterval(() => refreshJobs(table), 2000);
});
