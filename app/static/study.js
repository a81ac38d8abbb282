// Study page: assistance toggle, heatmap method and opacity, frame scroll, the AI followed live while its
// jobs run (live.js): predictions and heatmaps appear as the worker commits them, without a reload; and the
// comparison with a prior study of the patient side by side (compare.js).
import { el, isActive, renderAiState } from "./ai_state.js";
import { assistanceOn, followAssistance, setAssistanceOn } from "./assistance.js";
import { bindComparison } from "./compare.js";
import { followStudy } from "./live.js";
import { applySizes } from "./sizes.js";

const study = document.getElementById("study");
const toggle = document.getElementById("assist-toggle");
applySizes();

// The session's one assistance switch (assistance.js): the worklist and the reading room follow it too.
function showAssistance(show) {
  document.body.classList.toggle("assist-off", !show);
  toggle.checked = show;
}

toggle.addEventListener("change", () => {
  setAssistanceOn(toggle.checked);
  showAssistance(toggle.checked);
});
showAssistance(assistanceOn());
followAssistance(showAssistance);

function bindViewer(viewer) {
  const frame = viewer.querySelector("img.frame");
  viewer.querySelector(".opacity-slider")?.addEventListener("input", (event) => {
    viewer.querySelector("img.overlay").style.opacity = String(event.target.value / 100);
  });
  viewer.querySelector(".heatmap-select")?.addEventListener("change", (event) => {
    viewer.querySelector("img.overlay").src = event.target.value;
  });
  const slider = viewer.querySelector(".frame-slider");
  slider?.addEventListener("input", () => {
    frame.src = `${frame.dataset.base}?frame=${slider.value}&max_size=1024`;
    viewer.querySelector(".frame-number").textContent = String(Number(slider.value) + 1);
  });
}

for (const viewer of document.querySelectorAll("figure.viewer")) bindViewer(viewer);

// Live updates ----------------------------------------------------------------------------------------------

// The study page lists a prediction's maps by method, as the server renders them (app/viewer/service.py).
const byMethod = (a, b) => (a.method < b.method ? -1 : a.method > b.method ? 1 : a.target_class - b.target_class);

function heatmapControls(viewer, heatmaps) {
  const stage = viewer.querySelector(".stage");
  const controls = viewer.querySelector(".controls");
  let overlay = stage.querySelector("img.overlay");
  let select = controls.querySelector(".heatmap-select");
  if (!heatmaps.length) {
    overlay?.remove();
    for (const label of controls.querySelectorAll("label.assist")) label.remove();
    return;
  }
  if (!select) {
    select = el("select", "heatmap-select");
    const chooser = el("label", "assist", "Heatmap ");
    chooser.append(select);
    const opacity = el("label", "assist", "Opacity ");
    const slider = el("input", "opacity-slider");
    Object.assign(slider, { type: "range", min: "0", max: "100", value: "50" });
    opacity.append(slider);
    controls.append(chooser, opacity);
    select.addEventListener("change", (event) => {
      stage.querySelector("img.overlay").src = event.target.value;
    });
    slider.addEventListener("input", (event) => {
      stage.querySelector("img.overlay").style.opacity = String(event.target.value / 100);
    });
  }
  const kept = select.value;
  const urls = heatmaps.map((heatmap) => `/api/heatmaps/${heatmap.id}.png`);
  select.replaceChildren(...heatmaps.map((h, i) => new Option(`${h.method} · ${h.target_label}`, urls[i])));
  select.value = urls.includes(kept) ? kept : urls[0];
  if (!overlay) {
    overlay = el("img", "overlay assist");
    stage.append(overlay);
  }
  if (overlay.getAttribute("src") !== select.value) overlay.src = select.value;
  overlay.alt = `${heatmaps[urls.indexOf(select.value)].method} heatmap`;
}

// The same markup as the template's prediction block (viewer/study.html), drawn with DOM nodes.
function predictionBlock(instance, position) {
  const a = instance.assistance;
  const block = el("div", "prediction");
  block.dataset.instanceId = String(instance.id);
  const title = el("h3", "", `Image ${position}: `);
  title.append(el("span", "prediction-label", a.label));
  block.append(title);
  if (a.referral) block.append(el("p", "alert alert-warn", "The model is unsure: read carefully."));
  const bars = el("ul", "bars");
  for (const item of a.probabilities) {
    const percent = (item.probability * 100).toFixed(1);
    const row = el("li", item.label === a.label ? "top" : "");
    const bar = el("span", "bar");
    const fill = el("span");
    fill.dataset.width = percent;
    bar.append(fill);
    row.append(el("span", "bar-label", item.label), bar, el("span", "bar-value", `${percent}%`));
    bars.append(row);
  }
  block.append(bars);
  const entropy = a.uncertainty.entropy;
  if (entropy !== null) block.append(el("p", "muted small", `Predictive entropy ${entropy.toFixed(3)}`));
  block.append(el("p", "muted small", `Model ${a.model_name} v${a.model_version}`));
  return block;
}

function applyResults(instances) {
  const blocks = [];
  instances.forEach((instance, index) => {
    const viewer = document.querySelector(`figure.viewer[data-instance-id="${instance.id}"]`);
    if (viewer) heatmapControls(viewer, [...(instance.assistance?.heatmaps ?? [])].sort(byMethod));
    if (instance.assistance) blocks.push(predictionBlock(instance, index + 1));
  });
  const list = document.getElementById("predictions");
  list.replaceChildren(...blocks);
  applySizes(list);
  live.updates += 1;
}

function applyState(row) {
  renderAiState(document.getElementById("ai-state"), row);
  study.dataset.aiState = row.ai_state;
}

function refuse(refusal) {
  if (refusal.status === 403) applyResults([...document.querySelectorAll("figure.viewer")].map((viewer) => (
    { id: Number(viewer.dataset.instanceId), assistance: null })));
  const note = el("p", "muted small", refusal.detail || `Live updates refused (${refusal.status}).`);
  document.getElementById("ai-state").replaceChildren(note);
}

const live = { updates: 0, follower: null };
window.lumen = { live, compare: bindComparison() };
if (isActive(study.dataset.aiState)) {
  document.getElementById("ai-state").dataset.state = study.dataset.aiState;
  live.follower = followStudy(study.dataset.studyId, {
    onState: applyState,
    onResults: applyResults,
    onRefused: refuse,
    finished: (row) => !isActive(row.ai_state),
  });
}
