// The reading room's layouts: 1x1, 1x2 or 2x2 cells, each a Viewport with its own image of the study (the first
// cell is the reading room's own viewport, the one the AI panel, the form, the keys and the toolbar speak of; the
// others choose their image in their corner). Linked, the cells follow the one the reader works in: zoom and pan,
// the window between images of the same modality, the frame between images of as many frames. Independent, each
// moves alone. Each cell shows its image's heatmap (the method chosen for it in the panel, else the first) under
// the panel's opacity, threshold and colours; the assistance switch hides them all (`assist-layer`).
import { Viewport } from "./viewer.js";

export const LAYOUTS = ["1x1", "1x2", "2x2"];
const CELLS = { "1x1": 1, "1x2": 2, "2x2": 4 };

export class Layout {
  // grid: the element holding the cells; template: one cell's markup; main: the first cell's Viewport;
  // instances: the study's images; overlayFor(instance, canvas): draws the instance's heatmap into the canvas and
  // resolves true, or resolves false when it has none.
  constructor({ grid, template, main, instances, overlayFor }) {
    this.grid = grid;
    this.template = template;
    this.instances = instances;
    this.overlayFor = overlayFor;
    this.name = "1x1";
    this.linked = true;
    this.opacity = 0.5;
    this.main = { viewport: main, stage: main.stage };
    this.cells = [this.main];
    this.leader = this.main;
    this.watch(this.main);
    // The keys and the toolbar act on the first cell: it leads until the pointer works in another.
    document.addEventListener("keydown", () => (this.leader = this.main), true);
    const lead = (event) => (this.leader = this.cells.find((cell) => cell.stage.contains(event.target)) ?? this.main);
    document.addEventListener("pointerdown", lead, true);
    document.addEventListener("wheel", lead, { capture: true, passive: true });
  }

  get shown() {
    return this.cells.slice(0, CELLS[this.name]);
  }

  set(name) {
    if (!(name in CELLS)) return;
    this.name = name;
    while (this.cells.length < CELLS[name]) this.cells.push(this.addCell(this.cells.length));
    this.grid.dataset.layout = name;
    this.cells.forEach((cell, index) => (cell.stage.hidden = index >= CELLS[name]));
    for (const cell of this.shown) if (cell !== this.main && this.linked) this.align(cell);
  }

  setLinked(linked) {
    this.linked = linked;
    if (linked) for (const cell of this.shown) if (cell !== this.leader) this.align(cell, this.leader);
  }

  // A new cell shows the study's next image (the same one again when the study has fewer).
  addCell(index) {
    const stage = this.template.content.firstElementChild.cloneNode(true);
    this.grid.append(stage);
    const [canvas, overlay] = stage.querySelectorAll("canvas");
    const cell = { stage, overlay, select: stage.querySelector("select"), label: stage.querySelector(".cell-view") };
    cell.viewport = new Viewport({ stage, canvas, overlay, onChange: () => this.describe(cell) });
    cell.viewport.tool = this.main.viewport.tool === "pan" ? "pan" : "wl";
    cell.viewport.onFrameStep = (step) => this.stepFrame(cell, step);
    const name = (inst, i) => `Image ${i + 1} · ${inst.modality}${inst.frames > 1 ? ` · ${inst.frames} frames` : ""}`;
    cell.select.replaceChildren(...this.instances.map((inst, i) => new Option(name(inst, i), String(i))));
    cell.select.addEventListener("change", () => this.open(cell, Number(cell.select.value)));
    this.watch(cell);
    this.open(cell, index % this.instances.length);
    return cell;
  }

  async open(cell, index) {
    cell.index = index;
    cell.select.value = String(index);
    cell.viewport.setHeatmap(null);
    await cell.viewport.open(this.instances[index]);
    this.drawOverlay(cell);
  }

  // The measuring tools stay in the first cell: the others window or pan with the left button.
  setTool(tool) {
    for (const cell of this.cells) if (cell !== this.main) cell.viewport.tool = tool === "pan" ? "pan" : "wl";
  }

  watch(cell) {
    cell.stage.addEventListener("viewportchange", () => {
      if (!this.linked || cell !== this.leader || !cell.viewport.settled) return;
      for (const other of this.shown) if (other !== cell) this.align(other, cell, { window: true });
    });
    // An image just opened takes the linked view it joins, with its own window until the reader changes one.
    cell.stage.addEventListener("viewportopened", () => {
      const leader = this.shown.find((other) => other !== cell && other.viewport.settled);
      if (this.linked && leader) this.align(cell, leader);
    });
  }

  align(cell, leader = this.main, { window = false } = {}) {
    const [view, lead] = [cell.viewport, leader.viewport];
    if (!view.settled || !lead.settled || cell === leader) return;
    const [a, b] = [view.instance, lead.instance];
    const sameKind = a.modality === b.modality && !a.colour === !b.colour;
    view.follow(lead, { window: window && sameKind });
    if (view.instance.frames === lead.instance.frames && view.frame !== lead.frame) view.showFrame(lead.frame);
  }

  async stepFrame(cell, step) {
    const view = cell.viewport;
    const frames = view.instance?.frames ?? 1;
    if (frames < 2) return;
    await view.showFrame((view.frame + step + frames) % frames);
  }

  describe(cell) {
    const view = cell.viewport;
    const frames = view.instance?.frames ?? 1;
    const zoom = Math.round(view.fitScale() * view.zoom * 100);
    cell.label.textContent = `Zoom ${zoom}%${frames > 1 ? ` · Frame ${view.frame + 1}/${frames}` : ""}`;
  }

  // Again after the panel's method, threshold, colours or the study's results changed.
  refresh(opacity) {
    this.opacity = opacity;
    for (const cell of this.cells) if (cell !== this.main && cell.viewport.settled) this.drawOverlay(cell);
  }

  async drawOverlay(cell) {
    cell.overlay.style.opacity = String(this.opacity);
    cell.source ??= document.createElement("canvas");
    const instance = cell.viewport.instance;
    const shown = await this.overlayFor(instance, cell.source);
    if (cell.viewport.instance === instance) cell.viewport.setHeatmap(shown ? cell.source : null);
  }
}
