// The job page's "Folder translations" panel (translation jobs only): a zip of images POSTed
// to …/checkpoints/{ref}/translations, and this job's folder translations listed with their
// progress, a cancel button and their result.zip. A translation has no event stream: the
// list is polled, and only while one of them is unfinished.
import { FINISHED, api, request, showError } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;

/** The zip's name the server gave (Content-Disposition), or a fallback. */
function savedName(headers, fallback) {
  const match = /filename="?([^";]+)"?/.exec(headers.get("Content-Disposition") || "");
  return match ? match[1] : fallback;
}

/** Fetch a result.zip with the key and hand it to the browser as a download. */
async function download(translation, button) {
  showError($("folder-error"), "");
  button.disabled = true;
  try {
    const res = await request(translation.links.result);
    const url = URL.createObjectURL(await res.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = savedName(res.headers, `${translation.id}.zip`);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    if (err.status !== 401) showError($("folder-error"), `Download: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

/**
 * The panel for one job: `checkpoint()` is the ref chosen on the page. Call `show(job)` with
 * each state of the job; the panel lists and polls once it is shown.
 */
export function folderPanel({ jobId, base, checkpoint }) {
  let kind = null;
  let timer = null;
  let seq = 0; // the newest refresh; an older one that answers late draws nothing
  const rows = new Map(); // translation id -> { tr, cells, cancel, fetch, latest }

  function row(id) {
    if (rows.has(id)) return rows.get(id);
    const tr = document.createElement("tr");
    tr.dataset.translationId = id;
    const cells = {};
    for (const name of ["file", "step", "status", "progress", "actions"]) {
      cells[name] = document.createElement("td");
      tr.append(cells[name]);
    }
    cells.file.className = "folder-file";
    const pill = document.createElement("span");
    const bar = document.createElement("progress");
    const count = document.createElement("span");
    const error = document.createElement("div");
    error.className = "error folder-run-error";
    cells.status.append(pill, error);
    cells.progress.append(bar, " ", count);
    const entry = { tr, cells, pill, bar, count, error, latest: null };
    entry.cancel = document.createElement("button");
    entry.cancel.type = "button";
    entry.cancel.className = "secondary folder-cancel";
    entry.cancel.textContent = "Cancel";
    entry.cancel.addEventListener("click", () => cancel(entry));
    entry.fetch = document.createElement("button");
    entry.fetch.type = "button";
    entry.fetch.className = "folder-download";
    entry.fetch.textContent = "Download result.zip";
    entry.fetch.addEventListener("click", () => download(entry.latest, entry.fetch));
    cells.actions.append(entry.cancel, entry.fetch);
    rows.set(id, entry);
    return entry;
  }

  function render(items) {
    const body = $("folder-body");
    const wanted = [];
    for (const t of items) {
      const entry = row(t.id);
      entry.latest = t;
      const p = t.progress;
      entry.tr.dataset.status = t.status;
      entry.cells.file.textContent = t.filename || t.id;
      entry.cells.file.title = t.id;
      entry.cells.step.textContent = kind === "unpaired"
        ? `${t.checkpoint_step} · ${t.direction === "b2a" ? "B → A" : "A → B"}`
        : String(t.checkpoint_step);
      entry.pill.textContent = t.status;
      entry.pill.className = `status status-${t.status}`;
      entry.error.textContent = t.error || "";
      entry.error.hidden = !t.error;
      entry.bar.max = Math.max(p.total, 1);
      entry.bar.value = p.done;
      entry.count.textContent = `${p.done} of ${p.total}${p.failed ? ` (${p.failed} not translated)` : ""}`;
      entry.cancel.hidden = !t.links.cancel;
      entry.fetch.hidden = !t.links.result;
      wanted.push(entry.tr);
    }
    for (const [id, entry] of rows) {
      if (!items.some((t) => t.id === id)) {
        rows.delete(id);
        entry.tr.remove();
      }
    }
    // re-append only when the order changed, so a button under the pointer stays put
    if (wanted.some((tr, i) => body.children[i] !== tr)) body.replaceChildren(...wanted);
    $("folder-table").hidden = items.length === 0;
    $("folder-placeholder").hidden = items.length > 0;
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    const mine = ++seq;
    let items;
    try {
      const query = new URLSearchParams({ job_id: jobId, limit: "20" });
      items = (await api(`/v1/translations?${query}`)).items;
    } catch (err) {
      if (mine !== seq) return;
      if (err.status === 401) return;
      showError($("folder-error"), `Folder translations: ${err.message}`);
      timer = setTimeout(refresh, POLL_MS * 5); // the server may be back in a moment
      return;
    }
    if (mine !== seq) return;
    render(items);
    if (items.some((t) => !FINISHED.has(t.status))) timer = setTimeout(refresh, POLL_MS);
  }

  async function cancel(entry) {
    showError($("folder-error"), "");
    entry.cancel.disabled = true;
    try {
      await api(entry.latest.links.cancel, { method: "POST" });
    } catch (err) {
      if (err.status !== 401) showError($("folder-error"), `Cancel: ${err.message}`);
    } finally {
      entry.cancel.disabled = false;
      refresh();
    }
  }

  async function submit(event) {
    event.preventDefault();
    const error = $("folder-error");
    showError(error, "");
    const file = $("folder-file").files[0];
    if (!file) return showError(error, "Choose a zip of images first.");
    const query = new URLSearchParams(kind === "unpaired" ? { direction: $("folder-direction").value } : {});
    const data = new FormData();
    data.append("file", file);
    $("folder-btn").disabled = true;
    try {
      await api(`${base}/checkpoints/${encodeURIComponent(checkpoint())}/translations?${query}`, {
        method: "POST",
        body: data,
      });
      $("folder-file").value = "";
    } catch (err) {
      if (err.status !== 401) showError(error, `${err.problem?.title || err.status}: ${err.message}`);
    } finally {
      $("folder-btn").disabled = false;
      refresh();
    }
  }
  $("folder-form").addEventListener("submit", submit);

  return {
    show(job) {
      const first = kind === null;
      kind = job.config.kind;
      const translating = ["paired", "unpaired"].includes(kind);
      $("folders-panel").hidden = !translating;
      $("folder-direction-box").hidden = kind !== "unpaired";
      if (first && translating) refresh();
    },
  };
}
