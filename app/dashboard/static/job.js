// `/ui/jobs/{id}`: the job as its event stream reports it, its pictures and its actions.
// The job itself is never polled: its state arrives as `event: job` on the stream.
import {
  FINISHED, api, fmtEta, fmtNum, followEvents, getKey, setUpHeader, showError, showImage,
  throttle, toKeyForm,
} from "./api.js";
import { folderPanel } from "./folders.js";

const $ = (id) => document.getElementById(id);
const jobId = $("main").dataset.jobId;
const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
const samples = $("samples");
const picker = $("ckpt-select");
let job = null;
let deleted = false;
let stream = null; // the AbortController of the event stream being followed
// a translation job (config.kind paired or unpaired) shows translations, not samples
const translating = () => ["paired", "unpaired"].includes(job?.config?.kind);
const folders = folderPanel({ jobId, base, checkpoint: () => picker.value });

// ---- the job, live ----

function renderJob() {
  const p = job.progress;
  $("job-name").textContent = job.name;
  document.title = `${job.name} · ganforge`;
  const status = $("job-status");
  status.textContent = job.cancel_requested && !FINISHED.has(job.status) ? `${job.status} (canceling)` : job.status;
  status.className = `status status-${job.status}`;
  status.dataset.status = job.status;
  // what a running job is doing (the first job on new data prepares its scorer at step 0)
  const phase = job.status === "running" && p.phase ? p.phase : "";
  $("job-phase").textContent = phase.replace("_", " ");
  $("job-phase").dataset.phase = phase;
  // a queued job that no live worker can take says why (none running, or too few devices)
  const waiting = job.status === "queued" && job.queued_reason ? `waiting: ${job.queued_reason}` : "";
  $("job-waiting").textContent = waiting;
  $("job-waiting").hidden = !waiting;
  const bar = $("job-progress");
  bar.max = Math.max(p.total_steps, 1);
  bar.value = p.step;
  $("stat-step").textContent = `${p.step} / ${p.total_steps}`;
  $("stat-epoch").textContent = fmtNum(p.epoch);
  $("stat-d").textContent = fmtNum(p.losses?.d);
  $("stat-g").textContent = fmtNum(p.losses?.g);
  $("stat-ips").textContent = fmtNum(p.images_per_sec);
  $("stat-eta").textContent = job.status === "running" ? fmtEta(p.eta_seconds) : "–";
  $("stat-fd").textContent = fmtNum(job.best_fd);
  showError($("job-error"), job.error ? `Error: ${job.error}` : "");
  $("cancel-btn").disabled = deleted || FINISHED.has(job.status) || job.cancel_requested;
  renderResume();
  $("delete-btn").disabled = deleted || job.status === "running";
  renderLabels();
  renderKind();
}

/** A translation job: its validation grid in place of samples, a translate box and the
 * folder translations, no timeline. */
function renderKind() {
  const t = translating();
  $("samples-title").textContent = t ? "Translations of held-out inputs" : "Samples";
  for (const el of document.querySelectorAll("[data-noise-only]")) el.hidden = t;
  $("translate-panel").hidden = !t;
  $("direction-box").hidden = job.config.kind !== "unpaired";
  $("timeline-panel").hidden = t;
  folders.show(job);
}

// Failed and canceled jobs resume (to the same or more steps); a succeeded one trains
// longer, which needs a steps value above its total.
function renderResume() {
  const input = $("resume-steps");
  const succeeded = job.status === "succeeded";
  const total = job.progress.total_steps;
  input.placeholder = succeeded ? `> ${total}` : "same";
  $("resume-hint").hidden = !succeeded || deleted;
  $("resume-hint").textContent = succeeded
    ? `To train longer, enter a new total above ${total} steps: it continues from the last checkpoint.`
    : "";
  const wanted = Number(input.value);
  const longer = input.value !== "" && Number.isInteger(wanted) && wanted > total;
  $("resume-btn").disabled = deleted || !(["failed", "canceled"].includes(job.status) || (succeeded && longer));
  $("resume-btn").textContent = succeeded ? "Train longer" : "Resume";
}

function renderLabels() {
  const classes = job.config.conditional ? job.config.num_classes : null;
  const select = $("label");
  $("label-box").hidden = !classes;
  if (!classes || select.options.length === classes + 1) return;
  for (let i = 0; i < classes; i++) select.add(new Option(String(i), String(i)));
}

function onEvent(ev) {
  if (ev.event === "job") {
    const first = job === null;
    job = JSON.parse(ev.data);
    renderJob();
    lossesSoon();
    if (first) { // what the pictures show depends on the job's kind
      drawSamples();
      if (!translating()) refreshTimeline();
    }
  } else if (ev.event === "checkpoint") {
    checkpointsSoon();
    lossesSoon();
    if (!translating()) timelineSoon();
    if (picker.value === "latest" || picker.value === "best") drawSamples();
  } else if (ev.event === "deleted") {
    deleted = true;
    $("job-status").textContent = "deleted";
    if (job) renderJob();
  }
}

function followJob() {
  stream?.abort();
  const ctl = new AbortController();
  stream = ctl;
  const done = () => deleted || (job !== null && FINISHED.has(job.status));
  followEvents(`${base}/events`, onEvent, { signal: ctl.signal, done })
    .then(() => {
      if (!ctl.signal.aborted && !deleted) refreshAll(); // the final checkpoints and pictures
    })
    .catch((err) => {
      if (err.status === 404) showError($("job-error"), "No such job (or not one this key may see).");
      else if (err.status !== 401) showError($("job-error"), `Event stream: ${err.message}`);
    });
}

// ---- checkpoints and pictures ----

async function refreshCheckpoints() {
  let items;
  try {
    items = (await api(`${base}/checkpoints`)).items;
  } catch (err) {
    if (err.status !== 404) showError($("samples-error"), `Checkpoints: ${err.message}`);
    return;
  }
  const chosen = picker.value;
  while (picker.options.length > 2) picker.remove(2);
  const best = items.find((c) => c.best);
  picker.options[1].textContent = best ? `best (step ${best.step}, FD ${fmtNum(best.scores?.fd)})` : "best";
  const body = $("ckpt-body");
  body.replaceChildren();
  for (const c of items) {
    const fd = c.score_status === "scored" ? fmtNum(c.scores?.fd) : c.score_status;
    picker.add(new Option(`step ${c.step} · FD ${fd}${c.best ? " ★ best" : ""}`, c.id));
    const tr = document.createElement("tr");
    if (c.best) tr.className = "best";
    for (const text of [`${c.step}${c.best ? " ★" : ""}`, fd, c.scores?.preferred ?? "–", c.id]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  // keep the choice unless that checkpoint was pruned meanwhile
  picker.value = [...picker.options].some((o) => o.value === chosen) ? chosen : "latest";
}

function samplesPath(seed) {
  if (translating()) {
    const query = new URLSearchParams({ n: "8", ema: $("ema").value });
    return `${base}/checkpoints/${encodeURIComponent(picker.value)}/translations.png?${query}`;
  }
  const query = new URLSearchParams({ n: "64", nrow: "8", seed, ema: $("ema").value });
  if (!$("label-box").hidden && $("label").value) query.set("label", $("label").value);
  if ($("truncation").value) query.set("truncation", $("truncation").value);
  return `${base}/checkpoints/${encodeURIComponent(picker.value)}/samples.png?${query}`;
}

async function drawSamples() {
  const placeholder = $("samples-placeholder");
  const seed = $("seed").value || "0";
  samples.dataset.state = "loading";
  try {
    const headers = await showImage(samples, samplesPath(seed));
    if (!headers) return; // a newer drawing replaced this one
    const id = headers.get("X-Checkpoint-Id");
    const step = headers.get("X-Checkpoint-Step");
    samples.dataset.checkpointId = id;
    samples.dataset.checkpointStep = step;
    samples.dataset.seed = seed;
    samples.dataset.state = "ready";
    $("samples-caption").textContent = translating()
      ? `checkpoint ${id} · step ${step} · each row: input, output${job.config.kind === "paired" ? ", target" : ""}`
      : `checkpoint ${id} · step ${step} · seed ${seed}`;
    placeholder.hidden = true;
    showError($("samples-error"), "");
  } catch (err) {
    samples.dataset.state = "error";
    if (err.status === 404) {
      samples.hidden = true;
      $("samples-caption").textContent = "";
      placeholder.textContent = picker.value === "latest" ? "No checkpoint yet." : err.message;
      placeholder.hidden = false;
    } else if (err.status !== 401) {
      showError($("samples-error"), err.message);
    }
  }
}

/** A chart or timeline: shown, or its placeholder while there is nothing to draw yet. */
async function drawPicture(img, path, placeholder) {
  img.dataset.state = "loading";
  try {
    if (await showImage(img, path)) {
      placeholder.hidden = true;
      img.dataset.state = "ready";
    }
  } catch (err) {
    img.dataset.state = "error";
    if (err.status === 404 || err.status === 409) {
      img.hidden = true;
      placeholder.hidden = false;
    } else if (err.status !== 401) {
      placeholder.textContent = err.message;
      placeholder.hidden = false;
    }
  }
}

const refreshLosses = () => drawPicture($("losses"), `${base}/losses.png`, $("losses-placeholder"));
const refreshTimeline = () => drawPicture($("timeline"), `${base}/timeline.png`, $("timeline-placeholder"));
// Charts are renders charged to the key's budget: not on every progress event.
const lossesSoon = throttle(refreshLosses, 4000);
const timelineSoon = throttle(refreshTimeline, 3000);
const checkpointsSoon = throttle(refreshCheckpoints, 500);

function refreshAll() {
  refreshCheckpoints();
  drawSamples();
  refreshLosses();
  if (!translating()) refreshTimeline();
}

// ---- translate an image (POST .../translate with the file as the body) ----

async function translateFile(event) {
  event.preventDefault();
  const file = $("translate-file").files[0];
  const out = $("translate-output");
  showError($("translate-error"), "");
  if (!file) return showError($("translate-error"), "Choose a PNG or JPEG image first.");
  const input = $("translate-input");
  if (input.src.startsWith("blob:")) URL.revokeObjectURL(input.src);
  input.src = URL.createObjectURL(file);
  input.hidden = false;
  const query = new URLSearchParams(job.config.kind === "unpaired" ? { direction: $("direction").value } : {});
  const path = `${base}/checkpoints/${encodeURIComponent(picker.value)}/translate?${query}`;
  out.dataset.state = "loading";
  $("translate-btn").disabled = true;
  try {
    const res = await fetch(path, {
      method: "POST",
      headers: { Authorization: `Bearer ${getKey()}`, "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    if (res.status === 401) return toKeyForm();
    if (!res.ok) {
      let detail = `HTTP ${res.status}`;
      try { const p = await res.json(); detail = `${p.title || res.status}: ${p.detail || ""}`; } catch { /* not JSON */ }
      out.dataset.state = "error";
      return showError($("translate-error"), detail);
    }
    if (out.src.startsWith("blob:")) URL.revokeObjectURL(out.src);
    out.src = URL.createObjectURL(await res.blob());
    out.hidden = false;
    out.dataset.state = "ready";
    out.dataset.checkpointStep = res.headers.get("X-Checkpoint-Step") || "";
    $("translate-caption").textContent = `output · step ${res.headers.get("X-Checkpoint-Step") ?? "?"}`;
  } catch (err) {
    out.dataset.state = "error";
    showError($("translate-error"), `Could not reach the server: ${err.message}`);
  } finally {
    $("translate-btn").disabled = false;
  }
}
$("translate-form").addEventListener("submit", translateFile);

// ---- actions ----

function showProblem(err) {
  const fields = err.problem?.errors || (err.problem?.field ? [{ field: err.problem.field, message: err.message }] : []);
  const onSteps = fields.find((e) => e.field === "steps");
  if (onSteps) showError($("err-steps"), onSteps.message);
  else showError($("actions-error"), `${err.status} ${err.problem?.title || ""}: ${err.message}`);
}

async function act(button, method, path, json) {
  showError($("actions-error"), "");
  showError($("err-steps"), "");
  button.disabled = true;
  try {
    return { ok: true, value: await api(path, { method, json }) };
  } catch (err) {
    if (err.status !== 401) showProblem(err);
    return { ok: false };
  } finally {
    if (job) renderJob();
  }
}

$("cancel-btn").addEventListener("click", async () => {
  const res = await act($("cancel-btn"), "POST", `${base}/cancel`);
  if (res.ok) { job = res.value; renderJob(); }
});

$("resume-steps").addEventListener("input", () => { if (job) renderResume(); });

$("resume-btn").addEventListener("click", async () => {
  const steps = $("resume-steps").value;
  const res = await act($("resume-btn"), "POST", `${base}/resume`, steps ? { steps: Number(steps) } : undefined);
  if (res.ok) {
    job = res.value;
    renderJob();
    followJob(); // the old stream ended with the job; a queued job has a new one
  }
});

$("delete-btn").addEventListener("click", async () => {
  if (!confirm(`Delete job "${job?.name ?? jobId}" and all its checkpoints?`)) return;
  const res = await act($("delete-btn"), "DELETE", base);
  if (res.ok) location.assign("/");
});

$("sample-form").addEventListener("submit", (event) => {
  event.preventDefault();
  drawSamples();
});
for (const id of ["ckpt-select", "seed", "label", "truncation", "ema"]) $(id).addEventListener("change", drawSamples);

if (!getKey()) toKeyForm();
else {
  setUpHeader();
  $("job-id").textContent = jobId;
  followJob();
  refreshCheckpoints(); // samples (or translations) and the timeline follow the job's kind
  refreshLosses();
}
