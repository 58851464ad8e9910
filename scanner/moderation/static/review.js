// fauxscan review: keyboard shortcuts on item pages, live figures on the jobs page. No inline script (CSP).
"use strict";

const DECISION_KEYS = { f: "fake", r: "real", u: "unsure" };
const LINK_KEYS = { j: "next", k: "prev", s: "skip" };

function gridKey(event, grid) {
  const tiles = [...grid.querySelectorAll(".tile")];
  const at = tiles.indexOf(document.activeElement);
  const columns = Math.max(1, tiles.filter((tile) => tile.offsetTop === tiles[0].offsetTop).length);
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns, l: 1, h: -1 };
  if (event.key in moves) {
    event.preventDefault();
    const next = tiles[Math.min(tiles.length - 1, Math.max(0, (at < 0 ? 0 : at + moves[event.key])))];
    if (next) next.focus();
    return true;
  }
  if ((event.key === "x" || event.key === " ") && at >= 0) {
    event.preventDefault();
    const box = tiles[at].querySelector("input[type=checkbox]");
    box.checked = !box.checked;
    countSelected(grid);
    return true;
  }
  if (event.key === "a") {
    event.preventDefault();
    const boxes = [...grid.querySelectorAll("input[type=checkbox]")];
    const all = boxes.every((box) => box.checked);
    for (const box of boxes) box.checked = !all;
    countSelected(grid);
    return true;
  }
  if (event.key === "Enter" && at >= 0) {
    event.preventDefault();
    window.location.assign(tiles[at].dataset.href);
    return true;
  }
  const decision = DECISION_KEYS[event.key];
  if (decision) {
    event.preventDefault();
    if (grid.querySelector("input[type=checkbox]:checked")) {
      document.querySelector(`#bulk button[value="${decision}"]`).click();
    }
    return true;
  }
  return false;
}

function countSelected(grid) {
  const count = grid.querySelectorAll("input[type=checkbox]:checked").length;
  const shown = document.getElementById("selected-count");
  if (shown) shown.textContent = `${count} selected`;
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "Enter" && event.target.closest("#decide input")) {
    event.preventDefault(); // a decision is only ever a chosen button or key, never Enter in the note
    return;
  }
  if (event.key === "Enter" && event.target.closest("#bulk input[name=note]")) {
    event.preventDefault(); // Enter in the bulk note records nothing either
    return;
  }
  if (event.target.closest("input:not([type=checkbox]), textarea, select")) return;
  const keys = document.getElementById("keys");
  if (keys && (event.key === "?" || (event.key === "Escape" && !keys.hidden))) {
    event.preventDefault();
    keys.hidden = event.key === "Escape" ? true : !keys.hidden;
    return;
  }
  const grid = document.getElementById("grid");
  if (grid && gridKey(event, grid)) return;
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

function zoom(event) {
  const figure = event.target.closest("figure.zoomable");
  if (!figure || event.target.tagName !== "IMG") return;
  const image = event.target;
  if (image.dataset.full && !image.dataset.shown) { // the original at its own pixels, fetched on first zoom
    image.dataset.shown = image.src;
    image.src = image.dataset.full;
  }
  figure.classList.toggle("zoomed");
}

document.addEventListener("keydown", onKey);
document.addEventListener("click", zoom);
document.addEventListener("DOMContentLoaded", () => {
  const grid = document.getElementById("grid");
  if (grid) grid.addEventListener("change", () => countSelected(grid));
  const table = document.getElementById("jobs");
  if (table) setInterval(() => refreshJobs(table), 2000);
});
