// Readers' own evidence: the regions that drove the grade, marked over the image with a box or a brush (an erase
// stroke takes marked area away, Clear all of this image's marks). Available under every condition, unassisted
// too: the marks are the reader's, not the AI's. They are kept in normalised image coordinates (x = column / width,
// y = row / height, 0..1), so that a mark means the same place at any zoom, pan or display size; the brush's
// radius is BRUSH_PX on screen when it is drawn, stored per axis ([rx, ry], each in its axis's normalised units).
// The mapping from the stage to the image is the viewport's (viewer.js: the tools get image pixels, layers draw
// through viewport.transform), the one the measuring tools use. The marks travel with the read: the draft
// autosave sends them as `evidence_marks` (forms.js), the submit freezes them, and a reopened page shows them
// again (app/reading/schemas.py EvidenceMark; the statistics: app/statistics/evidence.py).

export const EVIDENCE_TOOLS = { "evidence-box": "box", "evidence-brush": "brush", "evidence-erase": "erase" };
export const EVIDENCE_KEY = "v";
// The server's bounds (app/reading/schemas.py): a stroke that reaches MAX_STROKE_POINTS goes on as a new stroke.
const MAX_MARKS = 200;
const MAX_STROKE_POINTS = 2000;
const MAX_POINTS = 20000;
const BRUSH_PX = 10; // the brush's radius on screen (CSS pixels) at the zoom it is drawn at
const STEP = 0.35; // a stroke takes a new point once the pointer has moved this many radii
const PAINT = "#3ddc8c";
const ALPHA = 0.38;
const TYPING = new Set(["text", "search", "email", "number", "password"]);

const clamp = (value) => Math.min(1, Math.max(0, value));
const round = (value) => Math.round(value * 1e6) / 1e6; // a micro-image: far below a pixel, and short JSON
const copy = (mark) => JSON.parse(JSON.stringify(mark));

export class EvidenceLayer {
  constructor(viewport, canvas, { marks = [], onChange = () => {}, locked = () => false } = {}) {
    this.viewport = viewport;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.paint = document.createElement("canvas"); // the marks composed: erase strokes cut what came before
    this.marks = marks.map(copy);
    this.onChange = onChange;
    this.locked = locked;
    this.drawing = null; // the mark being drawn, not yet in `marks`
    for (const [tool, kind] of Object.entries(EVIDENCE_TOOLS)) viewport.tools.set(tool, this.toolFor(kind));
    viewport.layers.push(this);
  }

  here(mark) {
    return mark.instance_id === this.viewport.instance?.id && (mark.frame ?? 0) === this.viewport.frame;
  }

  /** This image's marks (the current instance and frame). */
  list() {
    return this.marks.filter((mark) => this.here(mark));
  }

  points() {
    return this.marks.reduce((sum, mark) => sum + (mark.points?.length ?? 0), 0);
  }

  normalise(point) {
    return [round(clamp(point.x / this.viewport.width)), round(clamp(point.y / this.viewport.height))];
  }

  // BRUSH_PX on screen at the current zoom, in each axis's normalised units.
  radius() {
    const pixels = BRUSH_PX / (this.viewport.fitScale() * this.viewport.zoom);
    const axis = (size) => Math.max(1e-6, Math.min(0.5, round(pixels / size)));
    return [axis(this.viewport.width), axis(this.viewport.height)];
  }

  toolFor(kind) {
    return {
      down: (point) => this.start(kind, point),
      move: (point) => this.extend(point),
      up: (point) => {
        this.extend(point, { end: true });
        this.finish();
      },
    };
  }

  start(kind, point) {
    const viewport = this.viewport;
    if (this.locked() || !viewport.instance || !viewport.source || this.marks.length >= MAX_MARKS) return;
    const [x, y] = this.normalise(point);
    const base = { kind, instance_id: viewport.instance.id, frame: viewport.frame };
    this.anchor = [x, y];
    this.drawing = kind === "box" ? { ...base, box: [x, y, x, y] } : { ...base, radius: this.radius(), points: [[x, y]] };
    this.draw();
  }

  // The pointer moved to `point`; `end`: it was let go there (a stroke ends where the pointer did).
  extend(point, { end = false } = {}) {
    const mark = this.drawing;
    if (!mark) return;
    const [x, y] = this.normalise(point);
    if (mark.kind === "box") {
      const [ax, ay] = this.anchor;
      mark.box = [Math.min(ax, x), Math.min(ay, y), Math.max(ax, x), Math.max(ay, y)];
    } else {
      const [lx, ly] = mark.points.at(-1);
      const [rx, ry] = mark.radius;
      const moved = Math.hypot((x - lx) / rx, (y - ly) / ry);
      if (moved < STEP && !(end && moved > 0)) return;
      if (this.points() + mark.points.length >= MAX_POINTS) return;
      mark.points.push([x, y]);
      if (mark.points.length >= MAX_STROKE_POINTS) {
        this.finish(); // the stroke goes on as a new one from here
        this.drawing = { ...mark, points: [[x, y]] };
      }
    }
    this.draw();
  }

  finish() {
    const mark = this.drawing;
    this.drawing = null;
    if (!mark) return;
    const [x0, y0, x1, y1] = mark.box ?? [0, 0, 1, 1];
    if (x0 < x1 && y0 < y1 && this.marks.length < MAX_MARKS) {
      this.marks.push(mark); // a click of the box tool (no area) marks nothing
      this.changed();
    }
    this.draw();
  }

  clear() {
    if (this.locked() || !this.list().length) return;
    this.marks = this.marks.filter((mark) => !this.here(mark));
    this.changed();
    this.draw();
  }

  lock() {
    this.drawing = null;
    this.draw();
  }

  changed() {
    this.onChange(this.marks.map(copy));
  }

  draw() {
    const viewport = this.viewport;
    for (const canvas of [this.canvas, this.paint]) {
      if (canvas.width !== viewport.canvas.width || canvas.height !== viewport.canvas.height) {
        canvas.width = viewport.canvas.width;
        canvas.height = viewport.canvas.height;
      }
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const marks = [...this.list(), ...(this.drawing && this.here(this.drawing) ? [this.drawing] : [])];
    if (!viewport.source || !viewport.instance || !marks.length) return;
    const pctx = this.paint.getContext("2d");
    pctx.setTransform(1, 0, 0, 1, 0, 0);
    pctx.clearRect(0, 0, this.paint.width, this.paint.height);
    viewport.transform(pctx); // image pixels -> device pixels, as the image itself is drawn
    for (const mark of marks) this.paintOne(pctx, mark);
    ctx.globalAlpha = ALPHA;
    ctx.drawImage(this.paint, 0, 0);
    ctx.globalAlpha = 1;
  }

  paintOne(ctx, mark) {
    const [width, height] = [this.viewport.width, this.viewport.height];
    ctx.save();
    ctx.globalCompositeOperation = mark.kind === "erase" ? "destination-out" : "source-over";
    ctx.fillStyle = ctx.strokeStyle = PAINT;
    if (mark.kind === "box") {
      const [x0, y0, x1, y1] = mark.box;
      ctx.fillRect(x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height);
    } else {
      // Drawn where the brush is round: y scaled by k, so that a half width of rx * width along x is ry * height
      // along y in image pixels.
      const [rx, ry] = mark.radius;
      const k = (ry * height) / (rx * width);
      ctx.scale(1, k);
      ctx.lineWidth = 2 * rx * width;
      ctx.lineCap = ctx.lineJoin = "round";
      ctx.beginPath();
      mark.points.forEach(([x, y], index) => (index ? ctx.lineTo(x * width, (y * height) / k) : ctx.moveTo(x * width, (y * height) / k)));
      ctx.stroke();
      const [x, y] = mark.points[0];
      ctx.beginPath();
      ctx.arc(x * width, (y * height) / k, rx * width, 0, 2 * Math.PI); // a dab: one point, no segment to stroke
      ctx.fill();
    }
    ctx.restore();
  }
}

function onKey(event, toggle) {
  const target = event.target;
  const typing = target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && TYPING.has(target.type));
  if (typing || event.altKey || event.ctrlKey || event.metaKey || event.key.toLowerCase() !== EVIDENCE_KEY) return;
  event.preventDefault();
  toggle();
}

// The reading room's evidence tools (reading/read.html's ids): the toolbar's "Mark evidence" button opens the bar
// of box, brush, erase and clear; the marks go to the read form's drafts and are frozen with its submit.
export function bindEvidence(viewport, readForm) {
  const $ = (id) => document.getElementById(id);
  const button = $("evidence-button");
  const bar = $("evidence-bar");
  const layer = new EvidenceLayer(viewport, $("evidence-canvas"), {
    marks: readForm.evidenceMarks ?? [],
    locked: () => readForm.submitted,
    onChange: (marks) => {
      readForm.evidenceMarks = marks;
      readForm.touch();
      count();
    },
  });
  const tool = (name) => document.querySelector(`.tool[data-tool="${name}"]`);
  let last = "evidence-box";
  function count() {
    $("evidence-count").textContent = layer.marks.length ? String(layer.marks.length) : "";
  }
  function open(show) {
    bar.hidden = !show;
    button.setAttribute("aria-pressed", String(show));
    const current = viewport.tool in EVIDENCE_TOOLS;
    if (show && !current && !readForm.submitted) tool(last)?.click(); // the toolbar's own handler sets the tool
    if (!show && current) tool("wl")?.click();
  }
  function lock() {
    layer.lock();
    for (const element of bar.querySelectorAll("button")) element.disabled = true;
    if (viewport.tool in EVIDENCE_TOOLS) tool("wl")?.click();
    bar.title = "Your read is submitted: its marks stay as they are";
  }
  button.addEventListener("click", () => open(bar.hidden));
  for (const name of Object.keys(EVIDENCE_TOOLS)) tool(name)?.addEventListener("click", () => (last = name));
  $("evidence-clear").addEventListener("click", () => layer.clear());
  document.addEventListener("keydown", (event) => onKey(event, () => open(bar.hidden)));
  readForm.form.addEventListener("readlocked", lock);
  if (readForm.submitted) lock();
  count();
  viewport.evidence = layer;
  return layer;
}
