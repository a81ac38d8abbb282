// Worklist: live AI progress (polls /api/worklist every 2 s while a study is queued or running) and upload.
import { el, renderAiState } from "./ai_state.js";

const POLL_MS = 2000;
const table = document.getElementById("worklist");
const body = table.querySelector("tbody");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
let timer = null;

function formatUtc(iso) {
  // "2026-11-26T10:04:05.123Z" -> "2026-11-26 10:04", as the server renders it.
  return new Date(iso).toISOString().slice(0, 16).replace("T", " ");
}

function buildRow(row) {
  const tr = el("tr");
  tr.dataset.studyId = String(row.id);
  const patient = el("td");
  const link = el("a", "patient", row.patient_name || "Anonymous");
  link.href = `/studies/${row.id}`;
  patient.append(link, el("span", "patient-id", row.patient_id));
  const modality = el("td");
  modality.append(el("span", "modality", row.modality));
  tr.append(
    patient,
    el("td", "", row.study_date),
    el("td", "", row.description),
    modality,
    el("td", "num", String(row.instances)),
    el("td", "ai"),
    el("td", "when", formatUtc(row.uploaded_at)),
  );
  return tr;
}

function update(worklist) {
  let previous = null;
  for (const row of worklist.studies) {
    let tr = body.querySelector(`tr[data-study-id="${row.id}"]`);
    if (!tr) {
      tr = buildRow(row);
      if (previous) previous.after(tr);
      else body.prepend(tr);
    }
    const cell = tr.querySelector("td.ai");
    if (cell.dataset.state !== row.ai_state || row.ai_state === "running") renderAiState(cell, row);
    tr.dataset.aiState = row.ai_state;
    previous = tr;
  }
  const count = worklist.studies.length;
  document.getElementById("study-count").textContent = `${count} stud${count === 1 ? "y" : "ies"}`;
  document.getElementById("worklist-empty").hidden = count > 0;
}

async function refresh() {
  try {
    const response = await fetch("/api/worklist", { headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign(`/login?next=${encodeURIComponent(window.location.pathname)}`);
      return;
    }
    if (!response.ok) throw new Error(`worklist answered ${response.status}`);
    const worklist = await response.json();
    update(worklist);
    schedule(worklist.active);
  } catch (error) {
    console.warn("worklist refresh failed, retrying", error);
    schedule(true);
  }
}

function schedule(active) {
  clearTimeout(timer);
  timer = active ? setTimeout(refresh, POLL_MS) : null;
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
    await refresh();
  } catch (error) {
    status.className = "upload-status error";
    status.textContent = `Upload failed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

document.getElementById("upload-form")?.addEventListener("submit", upload);
for (const tr of body.querySelectorAll("tr")) tr.querySelector("td.ai").dataset.state = tr.dataset.aiState;
schedule(table.dataset.active === "true");
