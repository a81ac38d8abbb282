// The reading room: viewer, assistance (prediction, uncertainty, heatmaps) that one switch hides without
// moving anything, the grading form (autosaved, submitted once) and the explanation ratings. While the
// study's jobs run, the assistance panel follows them live (live.js): the prediction, its uncertainty, each
// heatmap method and its scores appear as the worker commits them, the reader's form, view and window kept.
// The viewport is the first cell of the layout (layout.js: 1x1, 1x2, 2x2, linked or not).
import { el } from "./ai_state.js";
import { assistanceOn, followAssistance, setAssistanceOn } from "./assistance.js";
import { beyondTargets, beyondView } from "./beyond.js";
import { bindEvidence } from "./evidence.js";
import { EventLog, RatingForm, ReadForm } from "./forms.js";
import { colourise, drawColourbar, formatValue, loadHeatmap } from "./heatmap.js";
import { LAYOUTS, Layout } from "./layout.js";
import { followStudy } from "./live.js";
import { bindViewerTools } from "./measure.js";
import { applySizes } from "./sizes.js";
import { Viewport } from "./viewer.js";

const data = JSON.parse(document.getElementById("reading-data").textContent);
applySizes();
const $ = (id) => document.getElementById(id);
// A reader-study read: the study's condition decides what is shown, and whether the reader may hide it.
const assignment = data.assignment;
const assignmentApi = assignment ? `/api/assignments/${assignment.id}` : null;
const canToggle = !assignment || assignment.allow_toggle;
const state = {
  index: 0,
  assist: assignment ? assignment.kind !== "unassisted" : assistanceOn(),
  method: new Map(), // instance id -> heatmap id
  opacity: 0.5,
  threshold: 0,
  colormap: "auto",
  grid: false,
  firstPaintAt: null,
  overlayShown: false,
  beyond: null, // the explanation beyond maps picked in the explanation list (beyond.js); null: a heatmap
  beyondShownAlone: false, // `beyond` shows because the image has no map (yet), not because the reader picked it
};
const heatmapCache = new Map();
const overlaySource = document.createElement("canvas");

// After the next frame has been presented: a rAF callback runs before paint, a message after it.
function afterPaint(callback) {
  requestAnimationFrame(() => {
    const channel = new MessageChannel();
    channel.port1.onmessage = callback;
    channel.port2.postMessage(null);
  });
}

const viewport = new Viewport({
  stage: $("stage"),
  canvas: $("image-canvas"),
  overlay: $("overlay-canvas"),
  onPaint: (kind) => {
    afterPaint(() => {
      if (state.firstPaintAt === null) {
        state.firstPaintAt = performance.now();
        performance.mark("lumen:first-image");
      }
      if (kind === "full") {
        performance.mark("lumen:full-image");
        $("loading").hidden = true;
      }
    });
  },
  onChange: () => updateHud(),
});
viewport.onFrameStep = (step) => stepFrame(step);
const layout = new Layout({
  grid: $("layout-grid"),
  template: $("cell-template"),
  main: viewport,
  instances: data.instances,
  overlayFor: drawCellOverlay,
});

const instance = () => data.instances[state.index];
const heatmaps = () => instance()?.assistance?.heatmaps ?? [];
const currentHeatmap = () => heatmaps().find((item) => item.id === state.method.get(instance()?.id)) ?? null;
// What the rating form rates: the explanation picked in the list, a map or an explanation beyond maps.
function ratingTarget() {
  if (state.beyond) return beyondTargets(instance()?.assistance).find((item) => item.explanation === state.beyond) ?? null;
  return currentHeatmap();
}

// The explanation beyond maps picked in the list, in the map controls' place; the map controls otherwise.
function showBeyond() {
  const view = state.beyond ? beyondView(instance()?.assistance, state.beyond) : null;
  $("beyond-view").replaceChildren(...(view ? [view] : []));
  $("beyond-view").hidden = !view;
  for (const row of document.querySelectorAll("#heatmap-controls .map-only")) row.hidden = Boolean(view);
}

function setBeyond(explanation, { log = true } = {}) {
  state.beyond = explanation;
  state.beyondShownAlone = false;
  $("method").value = `beyond:${explanation}`;
  showBeyond();
  showScores();
  ratingForm.show(ratingTarget());
  if (log) logEvent("method_changed");
}

function assistanceState() {
  return {
    visible: state.assist,
    method: state.beyond ?? currentHeatmap()?.method ?? null,
    opacity: state.opacity,
    colormap: state.colormap,
    threshold: state.threshold,
    grid: state.grid,
  };
}

const readForm = new ReadForm({
  form: $("read-form"),
  status: $("read-status"),
  studyId: data.study.id,
  read: data.read,
  getContext: () => ({
    instanceId: instance()?.id ?? null,
    assistance: assistanceState(),
    firstPaintAt: state.firstPaintAt,
  }),
  base: assignment ? `${assignmentApi}/reads` : undefined,
  onSubmitted: () => showNextCase(),
});
const ratingForm = new RatingForm({
  form: $("rating-form"),
  status: $("rating-status"),
  title: $("rating-method"),
  badge: $("rated-badge"),
  url: assignment ? `${assignmentApi}/ratings` : undefined,
  onSaved: () => assignment?.task === "explanation_rating" && showNextCase(),
});
const events = new EventLog({
  studyId: data.study.id,
  readClientId: () => readForm.clientId,
  url: assignment ? `${assignmentApi}/assistance-events` : undefined,
});

function showNextCase() {
  const link = $("next-case");
  if (!link) return;
  link.hidden = false;
  link.focus();
}
const logEvent = (name, detail = {}) => events.add(name, instance()?.id ?? null, { ...assistanceState(), ...detail });

function updateHud() {
  const w = viewport.window;
  $("hud-window").textContent = w ? `W ${formatValue(w.width)}  L ${formatValue(w.center)}` : "";
  const zoom = Math.round(viewport.fitScale() * viewport.zoom * 100);
  const inst = instance();
  const frames = inst?.frames ?? 1;
  $("hud-view").textContent = `Zoom ${zoom}%${frames > 1 ? ` · Frame ${viewport.frame + 1}/${frames}` : ""}`;
  $("frame-label").textContent = `${viewport.frame + 1}/${frames}`;
  if (inst) $("hud-info").textContent = `${inst.modality} · ${inst.columns}×${inst.rows}${viewport.invert ? " · inverted" : ""}`;
}

function fillPresets() {
  const select = $("preset");
  select.replaceChildren(
    ...viewport.presets.map((preset) => {
      const option = new Option(`${preset.key} · ${preset.name}`, String(preset.key));
      option.title = `W ${formatValue(preset.width)} L ${formatValue(preset.center)}`;
      return option;
    }),
  );
  select.disabled = !viewport.presets.length;
}

function fillMethods() {
  const select = $("method");
  const list = heatmaps();
  const beyond = beyondTargets(instance()?.assistance);
  // The model's best-ranked method comes first (the server orders them); its rank says why.
  const label = (item) => `${item.rank ? `#${item.rank} ` : ""}${item.method_label} · ${item.target_label}`;
  const options = list.map((item) => new Option(label(item), String(item.id)));
  if (beyond.length) {
    const group = document.createElement("optgroup");
    group.label = "Beyond heatmaps";
    group.append(...beyond.map((item) => new Option(item.method_label, `beyond:${item.explanation}`)));
    options.push(group);
  }
  select.replaceChildren(...options);
  select.title = list.some((item) => item.rank)
    ? "#N: the method's place in this model's faithfulness ranking (lumen evaluate-explanations), #1 best"
    : "";
  select.disabled = list.length + beyond.length === 0;
  $("grid-button").disabled = list.length < 2;
  for (const id of ["opacity", "threshold", "colormap"]) $(id).disabled = list.length === 0;
  // An empty list says nothing: leave it out.
  $("heatmap-controls").hidden = list.length + beyond.length === 0;
  const kept = state.method.get(instance()?.id);
  const chosen = list.some((item) => item.id === kept) ? kept : list[0]?.id;
  if (chosen !== undefined) state.method.set(instance().id, chosen);
  // The explanation beyond maps the reader picked stays picked while this image has it. Without maps the first
  // one shows by itself, until a map arrives (the live stream brings maps after the prediction).
  if (state.beyondShownAlone && list.length) state.beyond = null;
  if (!beyond.some((item) => item.explanation === state.beyond)) {
    state.beyond = list.length ? null : beyond[0]?.explanation ?? null;
    state.beyondShownAlone = state.beyond !== null;
  }
  if (state.beyond) select.value = `beyond:${state.beyond}`;
  else if (chosen !== undefined) select.value = String(chosen);
  showBeyond();
}

function getHeatmap(id) {
  if (!heatmapCache.has(id)) heatmapCache.set(id, loadHeatmap(id));
  return heatmapCache.get(id);
}

// Another cell's heatmap: the method chosen for its image in the panel, else the image's first.
async function drawCellOverlay(inst, canvas) {
  const list = inst?.assistance?.heatmaps ?? [];
  const info = list.find((item) => item.id === state.method.get(inst.id)) ?? list[0];
  if (!info) return false;
  colourise(await getHeatmap(info.id), state, canvas);
  return true;
}

async function showOverlay() {
  layout.refresh(state.opacity);
  const info = currentHeatmap();
  ratingForm.show(ratingTarget());
  showScores();
  if (!info) {
    viewport.setHeatmap(null);
    $("colourbar-box").hidden = true;
    return;
  }
  const heatmap = await getHeatmap(info.id);
  if (currentHeatmap() !== info) return;
  const { name, low, high } = colourise(heatmap, state, overlaySource);
  viewport.setHeatmap(overlaySource);
  drawColourbar($("colourbar"), name);
  $("cb-low").textContent = formatValue(low);
  $("cb-mid").textContent = formatValue((low + high) / 2);
  $("cb-high").textContent = formatValue(high);
  $("colourbar-box").hidden = false;
  if (state.grid) renderGrid();
  if (!state.overlayShown && viewport.source) {
    state.overlayShown = true;
    afterPaint(() => performance.mark("lumen:overlay"));
  }
}

// models.explain.metrics.cheap_scores, stored with each map; the others (target probability) say nothing here.
// Shown short beside the method (the panel has no line to spare at 1280 x 800), in full on hover.
const SCORE_NAMES = {
  deletion_auc: ["del", "deletion AUC (lower: more faithful)"],
  insertion_auc: ["ins", "insertion AUC (higher: more faithful)"],
  sparsity_gini: ["sparsity", "sparsity (Gini of |map|)"],
  completeness_delta: ["gap", "completeness gap"],
};

function showScores() {
  const info = state.beyond ? null : currentHeatmap(); // the scores are a map's: none beside other explanations
  const line = $("method-scores");
  if (assignment) {
    line.hidden = true; // a reader-study condition shows the map, not its scores
    return;
  }
  // A map without scores yet shows none: the live stream brings them when the worker has computed them.
  const shown = Object.entries(info?.scores ?? {}).filter(([key]) => key in SCORE_NAMES);
  line.textContent = shown.map(([key, value]) => `${SCORE_NAMES[key][0]} ${formatValue(value)}`).join(" · ");
  line.title = shown.length
    ? `Faithfulness of this map on this image: ${shown.map(([key, value]) => `${SCORE_NAMES[key][1]} ${formatValue(value)}`).join(", ")}`
    : "";
  line.hidden = !shown.length;
}

function setOpacity(value) {
  state.opacity = Math.min(1, Math.max(0, value));
  $("overlay-canvas").style.opacity = String(state.opacity);
  $("opacity").value = String(Math.round(state.opacity * 100));
  $("opacity-value").textContent = `${Math.round(state.opacity * 100)}%`;
  layout.refresh(state.opacity);
  if (state.grid) renderGrid();
}

function setMethod(id, { log = true } = {}) {
  state.method.set(instance().id, id);
  state.beyond = null; // a map picked: the map controls come back, the rating form rates the map
  showBeyond();
  $("method").value = String(id);
  showOverlay();
  if (log) logEvent("method_changed");
}

function setAssistance(show, { log = true } = {}) {
  if (log && !canToggle) {
    $("assist-toggle").checked = state.assist;
    return;
  }
  state.assist = show;
  document.body.classList.toggle("assist-off", !show);
  $("assist-toggle").checked = show;
  if (!assignment && log) setAssistanceOn(show);
  if (log) logEvent(show ? "shown" : "hidden");
}

// Switched in another tab of this session (a reader-study read keeps its condition's own state).
function followSessionAssistance(show) {
  if (assignment || show === state.assist) return;
  setAssistance(show, { log: false });
  logEvent(show ? "shown" : "hidden", { from: "another_page" });
}

async function renderGrid() {
  const grid = $("method-grid");
  const list = heatmaps();
  const columns = Math.ceil(Math.sqrt(list.length));
  const rows = Math.ceil(list.length / columns);
  grid.style.gridTemplateColumns = `repeat(${columns}, 1fr)`;
  const rect = $("stage").getBoundingClientRect();
  // The grid's 8-px padding and gaps, each cell's border and padding (8 px) and its label line (about 24 px).
  const cellW = (rect.width - 8 * (columns + 1)) / columns - 8;
  const cellH = (rect.height - 8 * (rows + 1)) / rows - 32;
  const cells = await Promise.all(
    list.map(async (info) => {
      const heatmap = await getHeatmap(info.id);
      const scale = Math.min(cellW / viewport.width, cellH / viewport.height);
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.floor(viewport.width * scale));
      canvas.height = Math.max(1, Math.floor(viewport.height * scale));
      const ctx = canvas.getContext("2d");
      if (viewport.source) ctx.drawImage(viewport.source, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = state.opacity;
      ctx.drawImage(colourise(heatmap, state).canvas, 0, 0, canvas.width, canvas.height);
      const cell = document.createElement("button");
      cell.type = "button";
      cell.className = `grid-cell${info.id === currentHeatmap()?.id ? " current" : ""}`;
      cell.dataset.heatmapId = String(info.id);
      const label = document.createElement("span");
      label.textContent = `${info.method_label} · ${info.target_label}`;
      cell.append(canvas, label);
      cell.addEventListener("click", () => {
        setMethod(info.id);
        setGrid(false);
      });
      return cell;
    }),
  );
  grid.replaceChildren(...cells);
}

function setGrid(show) {
  if (show && heatmaps().length < 2) return;
  state.grid = show;
  $("method-grid").hidden = !show;
  $("grid-button").setAttribute("aria-pressed", String(show));
  if (show) renderGrid();
  logEvent(show ? "grid_shown" : "grid_hidden");
}

async function stepFrame(step) {
  const frames = instance()?.frames ?? 1;
  if (frames < 2) return;
  const next = (viewport.frame + step + frames) % frames;
  await viewport.showFrame(next);
  const following = (next + step + frames) % frames;
  viewport.loadFrame(following).catch(() => {}); // prefetch
}

let cineTimer = null;
function toggleCine() {
  if (cineTimer) {
    clearTimeout(cineTimer);
    cineTimer = null;
    $("play").textContent = "Play";
    return;
  }
  $("play").textContent = "Pause";
  const tick = async () => {
    const started = performance.now();
    await stepFrame(1);
    if (!cineTimer) return;
    const fps = Math.min(60, Math.max(1, Number($("fps").value) || 10));
    cineTimer = setTimeout(tick, Math.max(0, 1000 / fps - (performance.now() - started)));
  };
  cineTimer = setTimeout(tick, 0);
}

async function openInstance(index) {
  if (cineTimer) toggleCine();
  state.index = index;
  const inst = instance();
  for (const block of document.querySelectorAll(".assist-instance")) {
    block.hidden = block.dataset.instanceId !== String(inst.id);
  }
  for (const thumb of document.querySelectorAll(".thumb")) {
    thumb.setAttribute("aria-current", String(Number(thumb.dataset.index) === index));
  }
  $("cine").hidden = inst.frames < 2;
  $("loading").hidden = false;
  fillMethods();
  viewport.setHeatmap(null);
  const opened = viewport.open(inst);
  showOverlay();
  try {
    await opened;
    fillPresets();
    showOverlay();
  } catch (error) {
    $("loading").textContent = `Image not loaded: ${error.message}`;
  }
}

function bindControls() {
  $("assist-toggle").addEventListener("change", (event) => setAssistance(event.target.checked));
  $("method").addEventListener("change", (event) => {
    const value = event.target.value;
    if (value.startsWith("beyond:")) setBeyond(value.slice("beyond:".length));
    else setMethod(Number(value));
  });
  $("opacity").addEventListener("input", (event) => setOpacity(Number(event.target.value) / 100));
  $("opacity").addEventListener("change", () => logEvent("opacity_changed"));
  $("threshold").addEventListener("input", (event) => {
    state.threshold = Number(event.target.value) / 100;
    $("threshold-value").textContent = `${event.target.value}%`;
    showOverlay();
  });
  $("threshold").addEventListener("change", () => logEvent("threshold_changed"));
  $("colormap").addEventListener("change", (event) => {
    state.colormap = event.target.value;
    showOverlay();
    logEvent("colormap_changed");
  });
  $("grid-button").addEventListener("click", () => setGrid(!state.grid));
  $("preset").addEventListener("change", (event) => viewport.applyPreset(Number(event.target.value)));
  $("invert").addEventListener("click", () => viewport.toggleInvert());
  $("fit").addEventListener("click", () => viewport.fit());
  $("reset").addEventListener("click", () => viewport.reset());
  $("prev-frame").addEventListener("click", () => stepFrame(-1));
  $("next-frame").addEventListener("click", () => stepFrame(1));
  $("play").addEventListener("click", toggleCine);
  $("help-button").addEventListener("click", () => setHelp(true));
  $("layout").addEventListener("change", (event) => setLayout(event.target.value));
  $("link").addEventListener("click", () => setLinked(!layout.linked));
  $("help-close").addEventListener("click", () => setHelp(false));
  for (const button of document.querySelectorAll(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  for (const thumb of document.querySelectorAll(".thumb")) {
    thumb.addEventListener("click", () => openInstance(Number(thumb.dataset.index)));
  }
}

function setLayout(name) {
  layout.set(name);
  $("layout").value = layout.name;
}

function setLinked(linked) {
  layout.setLinked(linked);
  $("link").setAttribute("aria-pressed", String(linked));
}

function setTool(tool) {
  viewport.tool = tool;
  layout.setTool(tool);
  for (const button of document.querySelectorAll(".tool")) button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
}

function setHelp(show) {
  $("help").hidden = !show;
  if (show) $("help-close").focus();
}

const TYPING = new Set(["text", "search", "email", "number", "password"]);
function onKey(event) {
  const target = event.target;
  const typing = target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && TYPING.has(target.type));
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    readForm.submit();
    return;
  }
  if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
  const control = ["INPUT", "SELECT", "BUTTON"].includes(target.tagName);
  const key = event.key;
  const actions = {
    "?": () => setHelp($("help").hidden),
    Escape: () => (state.grid ? setGrid(false) : setHelp(false)),
    a: () => setAssistance(!state.assist),
    w: () => setTool("wl"),
    p: () => setTool("pan"),
    f: () => viewport.fit(),
    r: () => viewport.reset(),
    i: () => viewport.toggleInvert(),
    m: () => {
      const list = heatmaps();
      const at = list.findIndex((item) => item.id === currentHeatmap()?.id);
      if (list.length) setMethod(list[(at + 1) % list.length].id);
    },
    g: () => setGrid(!state.grid),
    x: () => setLayout(LAYOUTS[(LAYOUTS.indexOf(layout.name) + 1) % LAYOUTS.length]),
    k: () => setLinked(!layout.linked),
    "[": () => setOpacity(state.opacity - 0.1),
    "]": () => setOpacity(state.opacity + 0.1),
    "+": () => viewport.zoomBy(1.25),
    "=": () => viewport.zoomBy(1.25),
    "-": () => viewport.zoomBy(0.8),
  };
  // Arrows and space keep their meaning inside form controls (radio groups, sliders, selects).
  const navigation = {
    ArrowUp: () => stepFrame(-1),
    PageUp: () => stepFrame(-1),
    ArrowDown: () => stepFrame(1),
    PageDown: () => stepFrame(1),
    ArrowLeft: () => data.instances.length > 1 && openInstance((state.index - 1 + data.instances.length) % data.instances.length),
    ArrowRight: () => data.instances.length > 1 && openInstance((state.index + 1) % data.instances.length),
    " ": () => instance()?.frames > 1 && toggleCine(),
  };
  let action = actions[key.length === 1 ? key.toLowerCase() : key] ?? actions[key];
  if (!action && !control) action = navigation[key];
  if (!action && /^[1-9]$/.test(key)) {
    action = () => {
      const preset = viewport.applyPreset(Number(key));
      if (preset) $("preset").value = key;
    };
  }
  if (!action) return;
  event.preventDefault();
  action();
}

// Live updates ----------------------------------------------------------------------------------------------

const ACTIVE = new Set(["queued", "running"]);
let liveRefusal = "";

function waitingText() {
  const study = data.study;
  if (liveRefusal) return liveRefusal;
  if (study.ai_state === "running") return `No AI result for this image yet: the model is running (${study.ai_progress}%).`;
  if (study.ai_state === "queued") return "No AI result for this image yet: the model is queued.";
  if (study.ai_state === "failed") return `No AI result for this image: the job failed (${study.ai_error}).`;
  return "No AI result for this image.";
}

function histogram(a) {
  const box = el("div", "histogram");
  const finding = a.study_finding;
  box.setAttribute("role", "img");
  box.setAttribute(
    "aria-label",
    finding
      ? `Calibrated probability of ${finding.words.toLowerCase()}`
      : a.multilabel ? "Calibrated probability of each finding" : "Calibrated class probabilities",
  );
  a.probabilities.forEach((item, index) => {
    // A study's finding shows its own bar only: the model's other labels do not answer its question.
    if (finding && index !== finding.label_index) return;
    const percent = item.probability * 100;
    const column = el("div", `hist-col ${finding || index === a.label_index ? "top" : ""}`);
    column.title = `${item.label}: ${percent.toFixed(1)}%`;
    const bar = el("span", "hist-bar");
    const fill = el("span");
    fill.dataset.height = percent.toFixed(1);
    bar.append(fill);
    column.append(el("span", "hist-value", `${percent.toFixed(0)}%`), bar, el("span", "hist-label", item.label));
    box.append(column);
  });
  return box;
}

// The same markup as the template's assistance block (reading/read.html), drawn with DOM nodes.
function assistanceNodes(inst) {
  const a = inst.assistance;
  if (!a) {
    if (inst.refusal) return [el("p", "uncertainty uncertainty-uncertain outside-domain", inst.refusal)];
    return [el("p", "muted ai-waiting", waitingText())];
  }
  const version = el("span", "muted small", `${a.model_name} v${a.model_version}`);
  const finding = a.study_finding;
  const nodes = [];
  if (finding) {
    const line = el("p", "prediction-line finding-line", `${finding.words}: `);
    line.append(el("strong", "finding-probability", `${(finding.probability * 100).toFixed(0)}%`), " ", version);
    const words = finding.words.toLowerCase();
    nodes.push(line, el("p", "muted small", `The model's calibrated probability that ${words} is present.`));
  } else {
    if (assignment?.finding) {
      const what = a.multilabel ? "are its own findings" : "is its own answer";
      const text = `The model does not report “${assignment.finding}”: what follows ${what}, not an answer to this study's question.`;
      nodes.push(el("p", "finding-unreported", text));
    }
    const line = el("p", "prediction-line", a.multilabel ? "Highest of the model's findings: " : "Model: ");
    line.append(el("strong", "prediction-label", a.label), " ", version);
    nodes.push(line);
    if (a.multilabel) {
      nodes.push(el("p", "muted small", "Each bar is the calibrated probability that the finding is present; they do not add up to 100%."));
    }
  }
  if (a.model_summary) nodes.push(el("p", "model-summary muted small", a.model_summary));
  nodes.push(histogram(a), el("p", `uncertainty uncertainty-${a.uncertainty.level}`, a.uncertainty.text));
  const map = a.heatmaps[0];
  if (finding && map && map.target_class !== finding.label_index) {
    const note = `The map explains the model's ${map.target_label} output, not ${finding.words.toLowerCase()}.`;
    nodes.push(el("p", "muted small map-target-note", note));
  }
  return nodes;
}

function renderAssistance(inst) {
  const block = document.querySelector(`.assist-instance[data-instance-id="${inst.id}"]`);
  if (!block) return;
  block.replaceChildren(...assistanceNodes(inst));
  applySizes(block);
}

function applyResults(items) {
  const shown = currentHeatmap()?.id;
  for (const item of items) {
    const inst = data.instances.find((candidate) => candidate.id === item.id);
    if (!inst) continue;
    // A rating saved in this page since the server looked still counts.
    const rated = new Set((inst.assistance?.heatmaps ?? []).filter((h) => h.rated).map((h) => h.id));
    for (const heatmap of item.assistance?.heatmaps ?? []) heatmap.rated ||= rated.has(heatmap.id);
    inst.assistance = item.assistance;
    inst.refusal = item.refusal;
    renderAssistance(inst);
  }
  fillMethods();
  // The rating form starts again only when the map under it changes: an answer being given is kept.
  if (currentHeatmap()?.id !== shown) showOverlay();
  else showScores();
  layout.refresh(state.opacity); // the other cells' images may have got their maps
  if (state.grid) renderGrid();
  live.updates += 1;
  performance.mark("lumen:live-results");
}

function applyState(update) {
  Object.assign(data.study, update);
  for (const inst of data.instances) if (!inst.assistance && !inst.refusal) renderAssistance(inst);
  showScores();
}

function refuseAssistance(refusal) {
  liveRefusal = refusal.detail || `the server refused live updates (${refusal.status})`;
  if (refusal.status === 403) {
    // Blinded since the page opened (a reader-study read of this study is now pending): take the AI away.
    for (const inst of data.instances) Object.assign(inst, { assistance: null, refusal: null });
    fillMethods();
    showOverlay();
  }
  for (const inst of data.instances) if (!inst.assistance && !inst.refusal) renderAssistance(inst);
}

const live = { updates: 0, follower: null };
if (!assignment && data.study.id != null && ACTIVE.has(data.study.ai_state)) {
  live.follower = followStudy(data.study.id, {
    onState: applyState,
    onResults: applyResults,
    onRefused: refuseAssistance,
    finished: (update) => !ACTIVE.has(update.ai_state),
  });
}

bindControls();
bindViewerTools(viewport);
bindEvidence(viewport, readForm);
setAssistance(state.assist, { log: false });
followAssistance(followSessionAssistance);
setOpacity(state.opacity);
document.addEventListener("keydown", onKey);
if (data.instances.length) {
  openInstance(0);
  logEvent(state.assist ? "shown" : "hidden", { initial: true });
} else {
  $("loading").textContent = "This study has no images.";
}
window.lumen = { viewport, layout, state, setAssistance, readForm, ratingForm, events, live };
