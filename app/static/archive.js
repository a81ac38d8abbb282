// Import cases from the hospital's archive (app/archive): search it (QIDO-RS through Lumen), tick studies, import
// them (Lumen fetches them by WADO-RS, stores them as uploads and adds them as cases), then reload the page.
const panel = document.getElementById("archive-import");
if (panel) {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const form = document.getElementById("archive-search");
  const table = document.getElementById("archive-results");
  const body = table.querySelector("tbody");
  const importButton = document.getElementById("archive-import-button");
  const status = document.getElementById("archive-status");

  const cell = (text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (String(value).trim()) query.set(key, String(value).trim());
    status.textContent = "Searching the archive…";
    const response = await fetch(`/api/archive/studies?${query}`, { headers: { Accept: "application/json" } });
    const answer = await response.json();
    if (!response.ok) { status.textContent = answer.detail ?? `The search failed (${response.status}).`; return; }
    body.replaceChildren();
    for (const study of answer) {
      const row = document.createElement("tr");
      row.dataset.uid = study.study_instance_uid;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = study.study_instance_uid;
      box.setAttribute("aria-label", `Import ${study.patient_name || study.patient_id} ${study.study_date}`);
      const pick = document.createElement("td");
      pick.append(box);
      row.append(pick, cell(`${study.patient_name} ${study.patient_id}`.trim()), cell(study.study_date),
        cell(study.modalities.join(" ")), cell(study.description), cell(study.instances ?? ""),
        cell(study.stored_study_id ? "stored" : ""));
      body.append(row);
    }
    table.hidden = answer.length === 0;
    importButton.hidden = answer.length === 0;
    status.textContent = answer.length ? `${answer.length} studies found.` : "No study of the archive matches.";
  });

  importButton.addEventListener("click", async () => {
    const uids = [...body.querySelectorAll("input:checked")].map((box) => box.value);
    if (!uids.length) { status.textContent = "Tick the studies to import."; return; }
    status.textContent = `Importing ${uids.length} studies…`;
    const response = await fetch("/api/archive/import", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ study_uids: uids, reader_study_id: Number(panel.dataset.readerStudyId) }),
    });
    const answer = await response.json();
    if (!response.ok) { status.textContent = answer.detail ?? `The import failed (${response.status}).`; return; }
    const refused = Object.entries(answer.refused).map(([uid, why]) => `${uid}: ${why}`);
    status.textContent = `${answer.cases_added} cases added.` + (refused.length ? ` Refused: ${refused.join("; ")}` : "");
    if (!refused.length) window.location.reload();
  });
}
