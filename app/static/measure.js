// Measurements on the viewport in the units a radiologist reads. Lengths in mm where the frame's header gives a
// pixel spacing (app/viewer/geometry.py: [between rows, between columns]), else in pixels, labelled which; a
// radiograph measured with ImagerPixelSpacing says "detector" (the body is magnified there). Angles in degrees
// (three clicks: end, vertex, end; a drag sets the first arm). Rectangle and ellipse ROIs: the mean, SD, minimum
// and maximum of the frame's values in modality units (stored * scale + offset, the server having applied the
// modality LUT: HU on CT) over the pixels whose centres lie inside or on the edge, and the shape's area. SD is the
// population SD (numpy's default, as cornerstone's). Measurements live in image pixels, per image and frame, so
// pan, zoom and window move nothing; Delete removes the last one, Shift+Delete or Clear all of this image.
// The same binding keeps two readouts in step with the viewport: the patient-direction letters on the four edges
// (from the frame's header; none when it states no orientation), and the preset selector, which says "Custom"
// once the reader drags a window of their own.

export const MEASURE_KEYS = { length: "l", angle: "n", rect: "b", ellipse: "e" };
const POINTS_NEEDED = { length: 2, angle: 3, rect: 2, ellipse: 2 };
const DRAG_MIN_PX = 3; // a shorter press is a click
const COLOUR = "#ffd23f";
const COLOUR_LAST = "#6fe3ff";
const EDGES = ["top", "bottom", "left", "right"];

export function lengthOf([a, b], spacing) {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  if (spacing) return { value: Math.hypot(dx * spacing[1], dy * spacing[0]), unit: "mm" };
  return { value: Math.hypot(dx, dy), unit: "px" };
}

// The angle at the vertex in degrees, in the patient when the spacing differs between rows and columns.
export function angleOf([a, vertex, c], spacing) {
  const [sy, sx] = spacing ?? [1, 1];
  const ux = (a.x - vertex.x) * sx;
  const uy = (a.y - vertex.y) * sy;
  const vx = (c.x - vertex.x) * sx;
  const vy = (c.y - vertex.y) * sy;
  return (Math.atan2(Math.abs(ux * vy - uy * vx), ux * vx + uy * vy) * 180) / Math.PI;
}

export function areaOf(kind, [a, b], spacing) {
  const width = Math.abs(b.x - a.x) * (spacing ? spacing[1] : 1);
  const height = Math.abs(b.y - a.y) * (spacing ? spacing[0] : 1);
  return { value: kind === "ellipse" ? (Math.PI * width * height) / 4 : width * height, unit: spacing ? "mm²" : "px²" };
}

// Mean, population SD, min and max of the values (stored * scale + offset) of the pixels whose centres
// (column + 0.5, row + 0.5) lie in the rectangle or ellipse spanned by the corners a and b; null when none do.
export function regionStats(kind, [a, b], { data, columns, rows, scale = 1, offset = 0 }) {
  const [x0, x1] = [Math.min(a.x, b.x), Math.max(a.x, b.x)];
  const [y0, y1] = [Math.min(a.y, b.y), Math.max(a.y, b.y)];
  const [cx, cy, rx, ry] = [(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2];
  if (rx <= 0 || ry <= 0) return null;
  const [first, last] = [Math.max(0, Math.ceil(x0 - 0.5)), Math.min(columns - 1, Math.floor(x1 - 0.5))];
  const [top, bottom] = [Math.max(0, Math.ceil(y0 - 0.5)), Math.min(rows - 1, Math.floor(y1 - 0.5))];
  let [n, mean, squares, min, max] = [0, 0, 0, Infinity, -Infinity];
  for (let row = top; row <= bottom; row += 1) {
    const v = (row + 0.5 - cy) / ry;
    for (let column = first; column <= last; column += 1) {
      const u = (column + 0.5 - cx) / rx;
      if (kind === "ellipse" && u * u + v * v > 1) continue;
      const value = data[row * columns + column] * scale + offset;
      n += 1; // Welford: no cancellation on large values of small spread (CT in HU)
      const delta = value - mean;
      mean += delta / n;
      squares += delta * (value - mean);
      if (value < min) min = value;
      if (value > max) max = value;
    }
  }
  return n ? { n, mean, sd: Math.sqrt(squares / n), min, max } : null;
}

export function formatMeasure(value) {
  if (value === 0) return "0";
  return Math.abs(value) >= 1 ? value.toFixed(1) : value.toPrecision(3);
}

function outlinedText(ctx, lines, x, y) {
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.lineJoin = "round";
  lines.forEach((line, index) => {
    const at = y + index * 15;
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.9)";
    ctx.strokeText(line, x, at);
    ctx.fillStyle = "#fff";
    ctx.fillText(line, x, at);
  });
}

export class MeasureLayer {
  constructor(viewport, canvas, { onChange } = {}) {
    this.viewport = viewport;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onChange = onChange ?? (() => {});
    this.byImage = new Map(); // "instance:frame" -> measurements, oldest first
    this.pending = null;
    for (const kind of Object.keys(POINTS_NEEDED)) viewport.tools.set(kind, this.toolFor(kind));
    viewport.layers.push(this);
  }

  key() {
    return `${this.viewport.instance?.id}:${this.viewport.frame}`;
  }

  list() {
    if (!this.byImage.has(this.key())) this.byImage.set(this.key(), []);
    return this.byImage.get(this.key());
  }

  toolFor(kind) {
    const setLast = (point) => {
      if (!this.pending) return;
      this.pending.points[this.pending.points.length - 1] = point;
      this.draw();
    };
    return {
      down: (point, event) => {
        if (this.pending?.kind !== kind || this.pending.key !== this.key()) {
          this.pending = { kind, key: this.key(), points: [point, point] };
        } else {
          setLast(point);
          this.advance();
        }
        if (this.pending) this.pending.pressedAt = [event.clientX, event.clientY];
        this.draw();
      },
      move: setLast,
      hover: setLast,
      up: (point, event) => {
        if (!this.pending?.pressedAt) return;
        setLast(point);
        const [x, y] = this.pending.pressedAt;
        // A drag sets the point it ends on; a click waits for the next click.
        if (Math.hypot(event.clientX - x, event.clientY - y) >= DRAG_MIN_PX) this.advance();
      },
    };
  }

  // The pending shape's last point is set: done if it has all its points, else the next one follows the pointer.
  advance() {
    const pending = this.pending;
    if (pending.points.length < POINTS_NEEDED[pending.kind]) {
      pending.points.push(pending.points[pending.points.length - 1]);
      return;
    }
    this.pending = null;
    const measurement = { kind: pending.kind, points: pending.points };
    this.list().push(measurement);
    this.draw();
    this.onChange(measurement);
  }

  cancel() {
    this.pending = null;
    this.draw();
  }

  removeLast() {
    this.list().pop();
    this.draw();
    this.onChange(this.list().at(-1) ?? null);
  }

  clear() {
    this.list().length = 0;
    this.pending = null;
    this.draw();
    this.onChange(null);
  }

  // What a measurement says, as lines of text and as numbers (tests read both).
  describe(measurement) {
    const meta = this.viewport.entry?.meta ?? {};
    const spacing = meta.spacing ?? null;
    const detector = spacing && meta.spacing_source === "ImagerPixelSpacing" ? " (detector)" : "";
    const { kind, points } = measurement;
    if (kind === "length") {
      const { value, unit } = lengthOf(points, spacing);
      return { lines: [`${value.toFixed(1)} ${unit}${detector}`], values: { length: value, unit } };
    }
    if (kind === "angle") {
      const degrees = angleOf(points, spacing);
      return { lines: [`${degrees.toFixed(1)}°`], values: { degrees } };
    }
    const area = areaOf(kind, points, spacing);
    const areaLine = `Area ${formatMeasure(area.value)} ${area.unit}${detector}`;
    const entry = this.viewport.entry;
    if (entry?.kind !== "gray") return { lines: [areaLine], values: { area: area.value, areaUnit: area.unit } };
    // Kept once drawn (a committed shape never changes); the shape being drawn is measured afresh at each move.
    const measured = () => regionStats(kind, points, { ...entry.meta, data: entry.data });
    const stats = measurement === this.pending ? measured() : (measurement.stats ??= measured());
    if (!stats) return { lines: [areaLine], values: { area: area.value, areaUnit: area.unit } };
    const units = meta.units ? ` ${meta.units}` : "";
    return {
      lines: [
        `Mean ${formatMeasure(stats.mean)} SD ${formatMeasure(stats.sd)}${units}`,
        `Min ${formatMeasure(stats.min)} Max ${formatMeasure(stats.max)}${units}`,
        `${areaLine} · ${stats.n} px`,
      ],
      values: { ...stats, units: meta.units ?? "", area: area.value, areaUnit: area.unit },
    };
  }

  items() {
    return this.list().map((measurement) => ({ kind: measurement.kind, points: measurement.points,
                                                ...this.describe(measurement) }));
  }

  draw() {
    const viewport = this.viewport;
    const ctx = this.ctx;
    if (this.canvas.width !== viewport.canvas.width || this.canvas.height !== viewport.canvas.height) {
      this.canvas.width = viewport.canvas.width;
      this.canvas.height = viewport.canvas.height;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!viewport.source || !viewport.instance) return;
    if (this.pending && (this.pending.key !== this.key() || viewport.tool !== this.pending.kind)) this.pending = null;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const list = this.list();
    list.forEach((measurement, index) => this.drawOne(measurement, index === list.length - 1 ? COLOUR_LAST : COLOUR));
    if (this.pending) {
      const { kind, points } = this.pending;
      this.drawOne(this.pending, COLOUR_LAST, { label: points.length === POINTS_NEEDED[kind] });
    }
  }

  drawOne(measurement, colour, { label = true } = {}) {
    const ctx = this.ctx;
    const points = measurement.points.map((point) => this.viewport.toStage(point));
    ctx.beginPath();
    if (measurement.kind === "rect") {
      const [a, b] = points;
      ctx.rect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
    } else if (measurement.kind === "ellipse") {
      const [a, b] = points;
      ctx.ellipse((a.x + b.x) / 2, (a.y + b.y) / 2, Math.abs(b.x - a.x) / 2, Math.abs(b.y - a.y) / 2, 0, 0, 2 * Math.PI);
    } else {
      points.forEach((point, index) => (index ? ctx.lineTo(point.x, point.y) : ctx.moveTo(point.x, point.y)));
    }
    // A dark edge under the colour: legible on a white radiograph as on black air.
    ctx.lineWidth = 3.5;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.75)";
    ctx.stroke();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = colour;
    ctx.stroke();
    if (!label) return;
    const anchor = measurement.kind === "angle" ? points[1] : points.reduce((a, b) => (b.x > a.x ? b : a));
    outlinedText(ctx, this.describe(measurement).lines, anchor.x + 8, anchor.y + 4);
  }
}

// The preset selector follows the viewport's window: the preset it is, or "Custom" after a drag.
function syncPreset(select, viewport) {
  let custom = select.querySelector("option[data-custom]");
  if (viewport.presetKey == null && viewport.window) {
    if (!custom) {
      custom = new Option("Custom", "custom");
      custom.dataset.custom = "";
      custom.disabled = true; // a label, not a choice
      select.append(custom);
    }
    custom.title = `W ${formatMeasure(viewport.window.width)} L ${formatMeasure(viewport.window.center)}`;
    select.value = "custom";
  } else {
    custom?.remove();
    if (viewport.presetKey != null) select.value = String(viewport.presetKey);
  }
}

function showEdges(viewport) {
  const edges = viewport.entry?.meta?.orientation ?? null;
  for (const edge of EDGES) {
    const marker = document.getElementById(`orient-${edge}`);
    if (!marker) continue;
    marker.textContent = edges?.[edge] ?? "";
    marker.hidden = !edges;
  }
}

const TYPING = new Set(["text", "search", "email", "number", "password"]);

function onKey(event, layer) {
  const target = event.target;
  const typing = target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && TYPING.has(target.type));
  if (typing || event.altKey || event.ctrlKey || event.metaKey) return;
  const tool = Object.keys(MEASURE_KEYS).find((kind) => MEASURE_KEYS[kind] === event.key.toLowerCase());
  if (tool) {
    document.querySelector(`.tool[data-tool="${tool}"]`)?.click(); // the toolbar's own handler sets the tool
  } else if (event.key === "Delete" || event.key === "Backspace") {
    if (event.shiftKey) layer.clear();
    else layer.removeLast();
  } else if (event.key === "Escape" && layer.pending) {
    layer.cancel();
    return; // Escape keeps its other meanings (help, grid)
  } else {
    return;
  }
  event.preventDefault();
}

// The measuring tools, edge letters and preset label of the reading room's viewport (reading/read.html's ids).
export function bindViewerTools(viewport) {
  const readout = document.getElementById("measure-readout");
  const layer = new MeasureLayer(viewport, document.getElementById("measure-canvas"), {
    onChange: (measurement) => {
      readout.textContent = measurement ? layer.describe(measurement).lines.join(" · ") : "";
    },
  });
  viewport.measure = layer;
  document.getElementById("measure-clear")?.addEventListener("click", () => layer.clear());
  const select = document.getElementById("preset");
  viewport.stage.addEventListener("viewportchange", () => {
    syncPreset(select, viewport);
    showEdges(viewport);
    const last = layer.list().at(-1);
    readout.textContent = last ? layer.describe(last).lines.join(" · ") : ""; // this image's, after a switch
  });
  document.addEventListener("keydown", (event) => onKey(event, layer));
  return layer;
}
