// Reader-study design pages: every form goes to the JSON API and shows the server's reason on failure.
import { send } from "./forms.js";

const $ = (id) => document.getElementById(id);
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const studyId = $("reader-study")?.dataset.id;
const list = (text) => text.split(/[\s,;]+/).map((item) => item.trim()).filter(Boolean);

function say(element, text, kind = "") {
  if (!element) return;
  element.textContent = text;
  element.className = `form-status ${kind}`;
}

function bind(formId, statusId, work) {
  const form = $(formId);
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    say($(statusId), "Saving…");
    try {
      await work(new FormData(form));
    } catch (error) {
      say($(statusId), error.message, "error");
    } finally {
      button.disabled = false;
    }
  });
}

// The designer: one row per condition (name, what it shows, its heatmap method where it shows one). The rows
// become the request's conditions; a key is made from each name (unique, snake_case, as exports name it).
const rows = $("condition-rows");

function slug(text, taken) {
  let key = text.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "_").replace(/^[^a-z]+|_+$/g, "").slice(0, 56);
  key ||= "condition";
  let unique = key;
  for (let n = 2; taken.has(unique); n += 1) unique = `${key}_${n}`;
  taken.add(unique);
  return unique;
}

function fitMethod(row) {
  const heatmap = row.querySelector('[name="condition-kind"]').value === "prediction_heatmap";
  const method = row.querySelector('[name="condition-method"]');
  method.hidden = !heatmap;
  method.disabled = !heatmap;
}

function wireRow(row) {
  row.querySelector('[name="condition-kind"]').addEventListener("change", () => fitMethod(row));
  row.querySelector(".remove-condition").addEventListener("click", () => {
    row.remove();
    fitRemoveButtons();
  });
  fitMethod(row);
}

function fitRemoveButtons() {
  const all = rows.querySelectorAll(".remove-condition");
  for (const button of all) button.disabled = all.length <= 1; // a study has at least one condition
}

function conditions() {
  const taken = new Set();
  return [...rows.querySelectorAll(".condition-row")].map((row, index) => {
    const label = row.querySelector('[name="condition-label"]').value.trim();
    const kind = row.querySelector('[name="condition-kind"]').value;
    if (!label) throw new Error(`Condition ${index + 1} needs a name`);
    const condition = { key: slug(label, taken), kind, label };
    if (kind === "prediction_heatmap") condition.method = row.querySelector('[name="condition-method"]').value;
    return condition;
  });
}

if (rows) {
  for (const row of rows.querySelectorAll(".condition-row")) wireRow(row);
  fitRemoveButtons();
  $("add-condition").addEventListener("click", () => {
    const row = $("condition-row-template").content.firstElementChild.cloneNode(true);
    rows.append(row);
    wireRow(row);
    fitRemoveButtons();
    row.querySelector('[name="condition-label"]').focus();
  });
  const task = $("study-task");
  const sayReads = () => {
    const reads = task.selectedOptions[0]?.dataset.reads;
    $("task-reads").textContent = reads ? `Each case of this task is ${reads}.` : "Each case of this task is any image with a heatmap.";
  };
  task.addEventListener("change", sayReads);
  sayReads();
  task.addEventListener("change", fitFinding);
  $("finding-choice").addEventListener("change", fitFinding);
  $("finding-text").addEventListener("input", sayFinding);
  fitFinding();
}

// A binary-finding study names its finding: a label of the models served on its images (their AI arms show its
// probability), or another finding typed in, which no served model reports (its AI arms then show none of it).
function finding() {
  const choice = $("finding-choice");
  return choice.value || $("finding-text").value.trim();
}

function fitFinding() {
  const binary = $("study-task").value === "binary_finding";
  $("finding-field").hidden = !binary;
  $("finding-other").hidden = !binary || $("finding-choice").value !== "";
  sayFinding();
}

function sayFinding() {
  const name = finding();
  const same = (text) => text.replace(/_/g, " ").trim().toLowerCase();
  const offered = [...$("finding-choice").options].find((option) => option.value && same(option.value) === same(name));
  let text;
  if (!name) text = "Name the finding: readers are asked whether it is present.";
  else if (offered) {
    const words = name.replace(/_/g, " ");
    const question = `${words[0].toUpperCase()}${words.slice(1)} present?`;
    text = `Readers are asked "${question}"; the AI arms show ${offered.dataset.models}'s probability of it.`;
  }
  else text = `No model served on chest radiographs reports "${name}": the AI arms will show the model's own findings, no probability of this one.`;
  $("finding-note").textContent = text;
}

bind("new-study", "new-study-status", async (data) => {
  const body = {
    name: data.get("name"),
    description: data.get("description") ?? "",
    task: data.get("task"),
    finding: data.get("task") === "binary_finding" ? finding() : "",
    scheme: data.get("scheme"),
    conditions: conditions(),
    questions: data.getAll("questions"),
    washout_days: Number(data.get("washout_days") || 0),
    allow_toggle: data.has("allow_toggle"),
    educational: data.has("educational"),
  };
  if (data.get("seed")) body.seed = Number(data.get("seed"));
  const { payload } = await send("POST", "/api/reader-studies", body);
  window.location.assign(`/reader-studies/${payload.id}`);
});

$("select-all")?.addEventListener("change", (event) => {
  for (const box of document.querySelectorAll('input[name="pick"]')) box.checked = event.target.checked;
});

bind("add-cases", "study-status", async (data) => {
  const ids = [...list(data.get("study_ids") ?? ""), ...data.getAll("pick")].map(Number);
  if (!ids.length) throw new Error("Pick studies in the list or type their ids");
  if (ids.some((id) => !Number.isInteger(id) || id < 1)) throw new Error("Study ids are whole numbers");
  await send("POST", `/api/reader-studies/${studyId}/cases`, { study_ids: ids });
  window.location.reload();
});

bind("add-readers", "study-status", async (data) => {
  await send("POST", `/api/reader-studies/${studyId}/readers`, { emails: list(data.get("emails")) });
  window.location.reload();
});

// A reference upload that would change the reference of an open or closed study is answered 409 with each case,
// old -> new: the coordinator sees that and applies it (confirm=true, audited) or keeps the current reference.
let unconfirmedReference = null;

async function uploadReference(data, { confirm = false } = {}) {
  const query = confirm ? "?confirm=true" : "";
  const response = await fetch(`/api/reader-studies/${studyId}/reference${query}`, {
    method: "POST",
    headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
    body: data,
  });
  const payload = await response.json().catch(() => null);
  if (response.status === 409 && !confirm) {
    unconfirmedReference = data;
    $("reference-confirm-text").textContent = payload?.detail ?? "The reference standard would change.";
    $("reference-confirm").hidden = false;
    say($("study-status"), "Nothing changed yet: confirm or keep the current reference below.", "error");
    return;
  }
  if (!response.ok) throw new Error(payload?.detail ?? `the server answered ${response.status}`);
  $("reference-confirm").hidden = true;
  say($("study-status"), `${payload.cases_added} cases added, ${payload.references_set} references set`, "ok");
  setTimeout(() => window.location.reload(), 600);
}

bind("reference-upload", "study-status", (data) => uploadReference(data));

$("reference-confirm-apply")?.addEventListener("click", async (event) => {
  event.target.disabled = true;
  try {
    await uploadReference(unconfirmedReference, { confirm: true });
  } catch (error) {
    say($("study-status"), error.message, "error");
  } finally {
    event.target.disabled = false;
  }
});

$("reference-confirm-cancel")?.addEventListener("click", () => {
  unconfirmedReference = null;
  $("reference-confirm").hidden = true;
  say($("study-status"), "The reference standard was left as it was.");
});

for (const [id, action] of [["open-study", "open"], ["close-study", "close"]]) {
  $(id)?.addEventListener("click", async () => {
    try {
      await send("POST", `/api/reader-studies/${studyId}/${action}`, {});
      window.location.reload();
    } catch (error) {
      say($("study-status"), error.message, "error");
    }
  });
}
