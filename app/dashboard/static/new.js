// `/ui/new`: the new-job form (its inputs rendered by the server from TrainConfig) and the
// dataset upload. Only the fields the user changed are sent; the API validates, and each of
// its errors is shown next to the input it names.
import { ApiError, api, getKey, setUpHeader, showError, toKeyForm } from "./api.js";

const $ = (id) => document.getElementById(id);
const form = $("job-form");
const inputs = [...form.querySelectorAll("[data-field]")];

function describe(ds) {
  const facts = [
    ds.builtin ? null : ds.kind,
    ds.image_size && `${ds.image_size}px`,
    ds.channels && `${ds.channels} ch`,
    ds.num_classes && `${ds.num_classes} classes`,
    ds.num_images && `${ds.num_images} ${ds.pairing === "paired" ? "pairs" : "images"}`,
    ds.pairing && "for translation jobs, not available yet",
  ].filter(Boolean);
  const name = ds.builtin ? ds.name : `${ds.name} (${ds.id})`;
  return `${name}${facts.length ? ` — ${facts.join(", ")}` : ""}${ds.available ? "" : " — not available on this server"}`;
}

/** Fill the dataset select from GET /v1/datasets, keeping (or moving to) a choice. */
async function loadDatasets(choose) {
  const select = $("f-dataset");
  const keep = choose || select.value;
  let items;
  try {
    items = (await api("/v1/datasets")).items;
  } catch (err) {
    if (err.status !== 401) showError($("err-dataset"), `Could not list the datasets: ${err.message}`);
    return;
  }
  const groups = { uploaded: document.createElement("optgroup"), builtin: document.createElement("optgroup") };
  groups.uploaded.label = "Uploaded";
  groups.builtin.label = "Built-in";
  for (const ds of items) {
    const option = new Option(describe(ds), ds.id);
    option.disabled = !ds.available || Boolean(ds.pairing); // pairs: no noise jobs on them
    (ds.builtin ? groups.builtin : groups.uploaded).append(option);
  }
  select.replaceChildren(...Object.values(groups).filter((g) => g.children.length));
  const usable = [...select.options].filter((o) => !o.disabled).map((o) => o.value);
  select.value = usable.includes(keep) ? keep : usable.includes(select.dataset.default) ? select.dataset.default : usable[0] ?? "";
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
    const name = String(e.field || "").replace(/^config\./, "").split(".")[0];
    const box = name && form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (!box) {
      elsewhere.push(`${e.field}: ${e.message}`);
      continue;
    }
    showError(box, box.hidden ? e.message : `${box.textContent}; ${e.message}`);
    const input = $(`f-${name}`);
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
  const config = {};
  for (const input of inputs) if (changed(input)) config[input.dataset.field] = valueOf(input);
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
    $("upload-result").textContent = `Uploaded ${ds.name} (${ds.id}): ${ds.num_images} images, ${ds.image_size}px. It is now selected above.`;
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

if (!getKey()) toKeyForm();
else {
  setUpHeader();
  loadDatasets();
}
