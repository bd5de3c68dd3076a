// `/ui/new`: the new-job form (its inputs rendered by the server from each kind's config:
// noise, paired, unpaired) and the dataset upload. Only the chosen kind's fields are shown,
// and only those the user changed are sent; the API validates, and each of its errors is
// shown next to the input it names.
import { ApiError, api, getKey, setUpHeader, showError, toKeyForm } from "./api.js";

const $ = (id) => document.getElementById(id);
const form = $("job-form");
const kindSelect = $("f-kind");
const section = (kind) => form.querySelector(`[data-kind-fields="${kind}"]`);
const active = () => section(kindSelect.value);
const inputs = () => [...active().querySelectorAll("[data-field]")];
// which datasets a kind trains on: images for noise, pairs or two domains for translation
const fits = (kind, ds) => (kind === "noise" ? !ds.pairing : ds.pairing === kind);

function showKind() {
  for (const box of form.querySelectorAll("[data-kind-fields]")) box.hidden = box !== active();
}
kindSelect.addEventListener("change", showKind);

function describe(ds) {
  const facts = [
    ds.builtin ? null : ds.kind,
    ds.image_size && `${ds.image_size}px`,
    ds.channels && `${ds.channels} ch`,
    ds.num_classes && `${ds.num_classes} classes`,
    ds.num_images && `${ds.num_images} ${ds.pairing === "paired" ? "pairs" : "images"}`,
    ds.pairing && `for ${ds.pairing} translation jobs`,
  ].filter(Boolean);
  const name = ds.builtin ? ds.name : `${ds.name} (${ds.id})`;
  return `${name}${facts.length ? ` — ${facts.join(", ")}` : ""}${ds.available ? "" : " — not available on this server"}`;
}

/** Fill each kind's dataset select from GET /v1/datasets (a kind's own datasets usable, the
 * others shown disabled), keeping a choice or moving to `choose` (a new upload) where it fits. */
async function loadDatasets(choose) {
  let items;
  try {
    items = (await api("/v1/datasets")).items;
  } catch (err) {
    if (err.status !== 401) showError(active().querySelector('[data-error-for="dataset"]'), `Could not list the datasets: ${err.message}`);
    return;
  }
  for (const select of form.querySelectorAll('select[data-field="dataset"]')) {
    const kind = select.closest("[data-kind-fields]").dataset.kindFields;
    const keep = choose && items.some((ds) => ds.id === choose && fits(kind, ds)) ? choose : select.value;
    const groups = { uploaded: document.createElement("optgroup"), builtin: document.createElement("optgroup") };
    groups.uploaded.label = "Uploaded";
    groups.builtin.label = "Built-in";
    for (const ds of items) {
      const option = new Option(describe(ds), ds.id);
      option.disabled = !ds.available || !fits(kind, ds);
      (ds.builtin ? groups.builtin : groups.uploaded).append(option);
    }
    select.replaceChildren(...Object.values(groups).filter((g) => g.children.length));
    const usable = [...select.options].filter((o) => !o.disabled).map((o) => o.value);
    select.value = usable.includes(keep) ? keep : usable.includes(select.dataset.default) ? select.dataset.default : usable[0] ?? "";
  }
  const uploaded = choose && items.find((ds) => ds.id === choose);
  if (uploaded) {
    kindSelect.value = uploaded.pairing || "noise"; // show the form that can train on it
    showKind();
  }
}

function changed(input) {
  if (input.dataset.kind === "bool") return input.checked !== (input.dataset.default === "true");
  return input.value.trim() !== input.dataset.default;
}

const number = (text) => (text.trim() !== "" && Number.isFinite(Number(text)) ? Number(text) : text.trim());

/** An input's value as JSON: numbers as numbers, booleans as booleans, emptied as null. */
function valueOf(input) {
  const kind = input.dataset.kind;
  if (kind === "bool") return input.checked;
  const text = input.value.trim();
  // An emptied field is null: off for the optional ones (ema_decay), and for the others the
  // API's "not a valid number" lands next to the input.
  if (text === "") return kind === "str" && !input.hasAttribute("data-nullable") ? "" : null;
  if (kind === "int" || kind === "float") return number(text);
  if (kind === "pair") return text.split(",").map(number);
  return text;
}

function clearErrors() {
  for (const box of form.querySelectorAll("[data-error-for]")) showError(box, "");
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  showError($("job-form-error"), "");
}

/** Each error of a 422 next to its input (`config.image_size` -> image_size); the rest on top. */
function showProblem(err) {
  const problem = err.problem || {};
  const errors = problem.errors?.length ? problem.errors : problem.field ? [{ field: problem.field, message: err.message }] : [];
  const elsewhere = [];
  let first = null;
  for (const e of errors) {
    // config.image_size, or with the kind named (config.paired.lambda_l1) -> the input
    const name = String(e.field || "").replace(/^config\./, "").replace(/^(noise|paired|unpaired)\./, "").split(".")[0];
    const box = name === "kind" ? $("err-kind") : name && active().querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (!box) {
      elsewhere.push(`${e.field}: ${e.message}`);
      continue;
    }
    showError(box, box.hidden ? e.message : `${box.textContent}; ${e.message}`);
    const input = name === "kind" ? kindSelect : active().querySelector(`[data-field="${CSS.escape(name)}"]`);
    input?.setAttribute("aria-invalid", "true");
    first ??= input;
  }
  if (!first) showError($("job-form-error"), `${problem.title || `HTTP ${err.status}`}: ${err.message}`);
  else if (elsewhere.length) showError($("job-form-error"), elsewhere.join("\n"));
  first?.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const config = kindSelect.value === "noise" ? {} : { kind: kindSelect.value };
  for (const input of inputs()) if (changed(input)) config[input.dataset.field] = valueOf(input);
  const button = $("job-submit");
  button.disabled = true;
  try {
    const job = await api("/v1/jobs", { method: "POST", json: { name: $("f-name").value.trim() || "job", config } });
    location.assign(`/ui/jobs/${encodeURIComponent(job.id)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) showProblem(err);
    else if (!(err instanceof ApiError)) showError($("job-form-error"), `Could not reach the server: ${err.message}`);
    button.disabled = false;
  }
});

// ---- upload (XMLHttpRequest: fetch cannot report upload progress) ----

function problemText(xhr) {
  try {
    const p = JSON.parse(xhr.responseText);
    return `${p.title || xhr.status}: ${p.detail || ""}`;
  } catch {
    return `HTTP ${xhr.status}`;
  }
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const bar = $("upload-progress");
  const error = $("upload-error");
  showError(error, "");
  $("upload-result").textContent = "";
  if (!file) return showError(error, "Choose a .zip or .npz file first.");
  const data = new FormData();
  data.append("file", file);
  if ($("upload-name").value.trim()) data.append("name", $("upload-name").value.trim());
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/datasets");
  xhr.setRequestHeader("Authorization", `Bearer ${getKey()}`);
  xhr.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable) return;
    bar.max = e.total;
    bar.value = e.loaded;
  });
  xhr.addEventListener("load", async () => {
    bar.hidden = true;
    if (xhr.status === 401) return toKeyForm();
    if (xhr.status !== 201) return showError(error, problemText(xhr));
    const ds = JSON.parse(xhr.responseText);
    const what = ds.pairing ? `${ds.num_images} ${ds.pairing === "paired" ? "pairs" : "images in two domains"}` : `${ds.num_images} images`;
    $("upload-result").textContent = `Uploaded ${ds.name} (${ds.id}): ${what}, ${ds.image_size}px. It is now selected above.`;
    await loadDatasets(ds.id);
  });
  xhr.addEventListener("error", () => {
    bar.hidden = true;
    showError(error, "The upload failed: the connection was lost.");
  });
  bar.value = 0;
  bar.hidden = false;
  xhr.send(data);
});

showKind();
if (!getKey()) toKeyForm();
else {
  setUpHeader();
  loadDatasets();
}
