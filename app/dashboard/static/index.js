// `/`: the key form, or the jobs list (newest first), refreshed while anything is moving.
import {
  FINISHED, api, authHeaders, fmtEta, fmtNum, fmtTime, getKey, setKey, setUpHeader, showError,
  takeReturnPath,
} from "./api.js";

const PAGE = 25;
const keySection = document.getElementById("key-section");
const jobsSection = document.getElementById("jobs-section");
const body = document.getElementById("jobs-body");
const more = document.getElementById("jobs-more");
const filter = document.getElementById("status-filter");
const jobsError = document.getElementById("jobs-error");
const rows = new Map(); // job id -> its <tr>, updated in place so the bars move smoothly
let pages = 1;
let timer = null;

function showKeyForm() {
  jobsSection.hidden = true;
  keySection.hidden = false;
  document.getElementById("key-input").focus();
}

document.getElementById("key-form").addEventListener("submit", async (event) => {
  event.preventDefault(); // never submitted to the server: the key stays in this tab
  const input = document.getElementById("key-input");
  const error = document.getElementById("key-error");
  const key = input.value.trim();
  input.value = "";
  if (!key) return;
  // Try the key before keeping it, so a typo gets a message rather than a redirect loop.
  let res;
  try {
    res = await fetch("/v1/jobs?limit=1", { headers: authHeaders(key), cache: "no-store", credentials: "omit" });
  } catch {
    showError(error, "Could not reach the server; try again.");
    return;
  }
  if (res.status === 401) {
    showError(error, "That key was refused (invalid or revoked).");
    return;
  }
  showError(error, "");
  setKey(key);
  const back = takeReturnPath();
  if (back) location.assign(back);
  else start();
});

function cell(row, index) {
  return row.children[index];
}

function newRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = job.id;
  for (let i = 0; i < 6; i++) tr.append(document.createElement("td"));
  const link = document.createElement("a");
  link.href = `/ui/jobs/${encodeURIComponent(job.id)}`;
  cell(tr, 0).append(link);
  cell(tr, 1).append(document.createElement("span"));
  const bar = document.createElement("progress");
  const text = document.createElement("span");
  text.className = "muted";
  cell(tr, 2).append(bar, " ", text);
  return tr;
}

function update(tr, job) {
  const p = job.progress;
  const link = cell(tr, 0).firstChild;
  link.textContent = job.name;
  link.title = job.id;
  const status = cell(tr, 1).firstChild;
  status.textContent = job.cancel_requested && !FINISHED.has(job.status) ? `${job.status} (canceling)` : job.status;
  status.className = `status status-${job.status}`;
  const [bar, , text] = cell(tr, 2).childNodes;
  bar.max = Math.max(p.total_steps, 1);
  bar.value = p.step;
  text.textContent = `${p.step} / ${p.total_steps}`;
  cell(tr, 3).textContent = job.status === "running" ? fmtEta(p.eta_seconds) : "–";
  cell(tr, 4).textContent = fmtNum(job.best_fd);
  cell(tr, 5).textContent = fmtTime(job.created_at);
}

function render(jobs, nextCursor) {
  const seen = new Set();
  jobs.forEach((job, i) => {
    let tr = rows.get(job.id);
    if (!tr) rows.set(job.id, (tr = newRow(job)));
    update(tr, job);
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    seen.add(job.id);
  });
  for (const [id, tr] of rows) {
    if (!seen.has(id)) {
      tr.remove();
      rows.delete(id);
    }
  }
  document.getElementById("jobs-empty").hidden = jobs.length > 0;
  more.hidden = !nextCursor;
}

async function load() {
  const jobs = [];
  let cursor = null;
  for (let i = 0; i < pages; i++) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (filter.value) query.set("status", filter.value);
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/v1/jobs?${query}`);
    jobs.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  render(jobs, cursor);
  return jobs.some((job) => !FINISHED.has(job.status));
}

async function poll() {
  clearTimeout(timer);
  let moving = true;
  try {
    moving = await load();
    showError(jobsError, "");
  } catch (err) {
    if (err.status === 401) return; // on the way to the key form
    showError(jobsError, `Could not load the jobs: ${err.message}`);
  }
  // Every 2 s while a job is queued or running (so the bars move), else every 10 s.
  if (!document.hidden) timer = setTimeout(poll, moving ? 2000 : 10000);
}

function start() {
  keySection.hidden = true;
  jobsSection.hidden = false;
  setUpHeader();
  poll();
}

more.addEventListener("click", () => { pages += 1; poll(); });
filter.addEventListener("change", () => { pages = 1; poll(); });
document.addEventListener("visibilitychange", () => { if (!document.hidden && getKey()) poll(); });

if (getKey()) start();
else showKeyForm();
