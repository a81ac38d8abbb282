// Study page: assistance toggle, heatmap method and opacity, frame scroll, and live job state.
import { isActive, renderAiState } from "./ai_state.js";
import { applySizes } from "./sizes.js";

const POLL_MS = 2000;
const ASSIST_KEY = "lumen.assist";
const study = document.getElementById("study");
const toggle = document.getElementById("assist-toggle");
applySizes();

function setAssistance(show) {
  document.body.classList.toggle("assist-off", !show);
  toggle.checked = show;
  sessionStorage.setItem(ASSIST_KEY, show ? "on" : "off");
}

toggle.addEventListener("change", () => setAssistance(toggle.checked));
setAssistance(sessionStorage.getItem(ASSIST_KEY) !== "off");

for (const viewer of document.querySelectorAll("figure.viewer")) {
  const frame = viewer.querySelector("img.frame");
  const overlay = viewer.querySelector("img.overlay");
  viewer.querySelector(".opacity-slider")?.addEventListener("input", (event) => {
    overlay.style.opacity = String(event.target.value / 100);
  });
  viewer.querySelector(".heatmap-select")?.addEventListener("change", (event) => {
    overlay.src = event.target.value;
  });
  const slider = viewer.querySelector(".frame-slider");
  slider?.addEventListener("input", () => {
    frame.src = `${frame.dataset.base}?frame=${slider.value}&max_size=1024`;
    viewer.querySelector(".frame-number").textContent = String(Number(slider.value) + 1);
  });
}

async function poll() {
  try {
    const response = await fetch(`/api/worklist/${study.dataset.studyId}`, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`status ${response.status}`);
    const row = await response.json();
    if (!isActive(row.ai_state)) {
      // The prediction and heatmaps are rendered by the server: reload once the job has finished.
      window.location.reload();
      return;
    }
    renderAiState(document.getElementById("ai-state"), row);
  } catch (error) {
    console.warn("job state refresh failed, retrying", error);
  }
  setTimeout(poll, POLL_MS);
}

if (isActive(study.dataset.aiState)) {
  document.getElementById("ai-state").dataset.state = study.dataset.aiState;
  setTimeout(poll, POLL_MS);
}
