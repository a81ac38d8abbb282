// Worklist: live rows without a reload (live.js: the server's event stream of the worklist, or polling
// /api/worklist where it cannot be held): AI state and progress, labels, referral flags and queue places move as
// jobs run, new studies appear at the top. Upload, filter (text, modality, AI state), sort by column, keyboard
// navigation (j/k or arrows, Enter to read). The model's labels and referral flags are AI assistance: hidden
// while the session's switch is off (assistance.js), in the rows drawn here as in the server's.
import { el, renderAiState } from "./ai_state.js";
import { assistanceOn, followAssistance } from "./assistance.js";
import { followWorklist } from "./live.js";
import { applySizes } from "./sizes.js";

const table = document.getElementById("worklist");
const body = table.querySelector("tbody");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const live = { updates: 0, follower: null };
applySizes(table);

function formatUtc(iso) {
  // "2026-11-26T10:04:05.123Z" -> "2026-11-26 10:04", as the server renders it.
  return new Date(iso).toISOString().slice(0, 16).replace("T", " ");
}

function buildRow(row) {
  const tr = el("tr");
  tr.dataset.studyId = String(row.id);
  tr.dataset.uploaded = row.uploaded_at;
  const patient = el("td");
  // A study without a name (an image upload) is told apart by its images and upload time.
  const link = el("a", "patient", row.patient_name || row.unnamed_label || "Anonymous");
  link.href = `/studies/${row.id}`;
  // Where identity is hidden the name is a pseudonym and there is no patient ID (app/visibility.py).
  if (!row.identity_shown) link.title = "A pseudonym: your role does not see who the patient is";
  patient.append(link, el("span", "patient-id", row.patient_id ?? ""));
  const modality = el("td");
  modality.append(el("span", "modality", row.modality));
  tr.append(
    patient,
    el("td", "", row.study_date),
    el("td", "", row.description),
    modality,
    el("td", "num", String(row.instances)),
    el("td", "ai"),
    el("td", "referral"),
    el("td", "when", formatUtc(row.uploaded_at)),
    readCell(row.id),
  );
  return tr;
}

function readCell(id) {
  const cell = el("td");
  const link = el("a", "read-link", "Read");
  link.href = `/studies/${id}/read`;
  cell.append(link);
  return cell;
}

function renderReferral(tr, referral) {
  tr.dataset.referral = String(referral);
  const cell = tr.querySelector("td.referral");
  const badge = el("span", "badge badge-refer assist", "refer");
  badge.title = "The model is unsure: read carefully";
  cell.replaceChildren(...(referral ? [badge] : []));
}

// A row as the server drew it, again: the fields that change after upload (images, AI, flags).
function renderRow(tr, row) {
  const link = tr.querySelector("a.patient");
  const name = row.patient_name || row.unnamed_label || "Anonymous";
  if (link.textContent !== name) link.textContent = name;
  tr.children[4].textContent = String(row.instances);
  // A running bar moves rather than being drawn again (ai_state.js).
  renderAiState(tr.querySelector("td.ai"), row);
  tr.dataset.aiState = row.ai_state;
  renderReferral(tr, row.ai_referral);
}

// `ids`: every row of the worklist, newest first (a row not among them is gone); `studies`: those that changed.
function update({ ids, studies }) {
  for (const row of studies) {
    let tr = body.querySelector(`tr[data-study-id="${row.id}"]`);
    if (!tr) {
      tr = buildRow(row);
      body.prepend(tr);
    }
    renderRow(tr, row);
  }
  const kept = new Set(ids.map(String));
  for (const tr of rows()) if (!kept.has(tr.dataset.studyId)) tr.remove();
  applySort();
  applyFilter();
  const count = rows().length;
  document.getElementById("study-count").textContent = `${count} stud${count === 1 ? "y" : "ies"}`;
  document.getElementById("worklist-empty").hidden = count > 0;
  live.updates += 1;
}

function signIn() {
  window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
}

function reason(payload, status) {
  const detail = payload?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((item) => item.msg ?? JSON.stringify(item)).join("; ");
  return `the server answered ${status}`;
}

async function upload(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const status = document.getElementById("upload-status");
  const button = form.querySelector("button");
  const files = form.querySelector('input[type="file"]').files;
  if (!files.length) return;
  const data = new FormData();
  for (const file of files) data.append("files", file);
  // "CR|CHEST": the modality and body part of PNG/JPEG files (empty: colour photographs default to fundus).
  const [modality, bodyPart] = (form.querySelector("#image-origin")?.value ?? "").split("|");
  if (modality) data.append("modality", modality);
  if (bodyPart) data.append("body_part", bodyPart);
  button.disabled = true;
  status.className = "upload-status";
  status.textContent = `Uploading ${files.length} file${files.length === 1 ? "" : "s"}…`;
  try {
    const response = await fetch(form.action, { method: "POST", body: data, headers: { "X-CSRF-Token": csrf } });
    const payload = await response.json().catch(() => null);
    if (!response.ok) {
      status.className = "upload-status error";
      status.textContent = `Upload refused: ${reason(payload, response.status)}`;
      return;
    }
    status.className = "upload-status ok";
    status.textContent = `Study ${payload.id} uploaded (${payload.instances?.length ?? 0} image(s)).`;
    form.reset();
    await live.follower.refresh().catch((error) => console.warn("worklist refresh failed", error));
  } catch (error) {
    status.className = "upload-status error";
    status.textContent = `Upload failed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

// Filtering, sorting and the keyboard work on the rows in the page; live updates keep them current.
const filters = {
  text: document.getElementById("filter-text"),
  modality: document.getElementById("filter-modality"),
  state: document.getElementById("filter-state"),
};
let sort = { key: "uploaded", direction: -1 };

function rows() {
  return [...body.querySelectorAll("tr")];
}

function applyFilter() {
  const text = filters.text.value.trim().toLowerCase();
  const modality = filters.modality.value;
  const state = filters.state.value;
  for (const tr of rows()) {
    const cells = tr.querySelectorAll("td");
    const matches =
      (!text || tr.textContent.toLowerCase().includes(text)) &&
      (!modality || cells[3].textContent.trim().split("/").includes(modality)) &&
      (!state || (state === "referral" ? tr.dataset.referral === "true" : tr.dataset.aiState === state));
    tr.hidden = !matches;
  }
  const selected = body.querySelector("tr.selected");
  if (selected?.hidden) selected.classList.remove("selected");
}

const SORT_VALUES = {
  patient: (tr) => tr.querySelector("td").textContent.trim().toLowerCase(),
  date: (tr) => tr.children[1].textContent.trim(),
  description: (tr) => tr.children[2].textContent.trim().toLowerCase(),
  modality: (tr) => tr.children[3].textContent.trim(),
  images: (tr) => Number(tr.children[4].textContent),
  ai: (tr) => `${tr.dataset.aiState} ${tr.children[5].textContent.trim()}`,
  referral: (tr) => (tr.dataset.referral === "true" ? 1 : 0),
  uploaded: (tr) => tr.dataset.uploaded ?? "",
};

function applySort() {
  const value = SORT_VALUES[sort.key];
  const sorted = rows().sort((a, b) => {
    const x = value(a);
    const y = value(b);
    return (x < y ? -1 : x > y ? 1 : 0) * sort.direction || Number(b.dataset.studyId) - Number(a.dataset.studyId);
  });
  body.append(...sorted);
  for (const th of table.querySelectorAll("thead th")) {
    const key = th.querySelector("button.sort")?.dataset.key;
    if (key) th.setAttribute("aria-sort", key === sort.key ? (sort.direction > 0 ? "ascending" : "descending") : "none");
  }
}

function select(tr) {
  body.querySelector("tr.selected")?.classList.remove("selected");
  if (!tr) return;
  tr.classList.add("selected");
  tr.scrollIntoView({ block: "nearest" });
}

function move(step) {
  const visible = rows().filter((tr) => !tr.hidden);
  if (!visible.length) return;
  const at = visible.indexOf(body.querySelector("tr.selected"));
  select(visible[Math.min(visible.length - 1, Math.max(0, at < 0 ? 0 : at + step))]);
}

function onKey(event) {
  const target = event.target;
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  if (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA") {
    if (event.key === "Escape") target.blur();
    return;
  }
  const actions = {
    j: () => move(1),
    ArrowDown: () => move(1),
    k: () => move(-1),
    ArrowUp: () => move(-1),
    "/": () => filters.text.focus(),
    Enter: () => {
      const tr = body.querySelector("tr.selected");
      if (tr) window.location.assign(`/studies/${tr.dataset.studyId}/read`);
    },
  };
  const action = actions[event.key];
  if (!action || (event.key === "Enter" && !body.querySelector("tr.selected"))) return;
  event.preventDefault();
  action();
}

for (const input of Object.values(filters)) input.addEventListener("input", applyFilter);
for (const button of table.querySelectorAll("button.sort")) {
  button.addEventListener("click", () => {
    const key = button.dataset.key;
    sort = { key, direction: sort.key === key ? -sort.direction : key === "uploaded" ? -1 : 1 };
    applySort();
  });
}
body.addEventListener("click", (event) => {
  const tr = event.target.closest("tr");
  if (tr && !event.target.closest("a")) select(tr);
});
document.addEventListener("keydown", onKey);
document.getElementById("upload-form")?.addEventListener("submit", upload);
for (const tr of body.querySelectorAll("tr")) tr.querySelector("td.ai").dataset.state = tr.dataset.aiState;
const showAssistance = (on) => document.body.classList.toggle("assist-off", !on);
showAssistance(assistanceOn());
followAssistance(showAssistance);
live.follower = followWorklist({ onRows: update, onSignedOut: signIn });
window.lumen = { live };
