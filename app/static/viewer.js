// A 2D canvas viewport: grayscale windowed in the browser from raw uint16 values, colour from PNG;
// window/level, zoom, pan, frames. A fast preview (image.png?max_size=512, stored at ingest: a file read on the
// server, no decoding) is painted first; the full-resolution frame replaces it when it has loaded.
// The windows come from the server (app/viewer/raw.py): each preset names its VOI LUT Function, and a VOI LUT
// Sequence arrives as the server's grey levels, one per stored value, after the pixels of the body.
// The full frame travels compressed: grayscale values as up-zigzag-shuffle-deflate (app/viewer/encodings.py),
// undone here by the browser's inflater and one typed-array loop; colour as the stored JPEG itself when it is one
// (app/viewer/colour.py), else PNG. Both are cached by the browser: their URLs never change what they send.
// Drawing tools (measure.js) register on the viewport: they get the left button's drags in image coordinates and
// redraw their layer whenever the image moves. Every change of view or window dispatches "viewportchange" on the
// stage; `presetKey` is the preset the window is (null once the reader drags their own). A layout's linked cells
// (layout.js) follow one another through `follow()`; `settled` is false while an image opens, so that opening one
// does not move the others, and "viewportopened" on the stage says when it is in.

const META_HEADER = "X-Lumen-Meta";
// The stored JPEG 2000 codestream where the server can send it so (decoded here in a worker), else the values
// deflated (app/viewer/encodings.py): the response's meta says which.
export const PIXEL_ENCODING = "jpeg2000";
// The meta's shape (app/viewer/raw.py META_VERSION) in the URL: a browser keeps a frame for a year at its URL, so
// a frame kept before the meta gained spacing and orientation is asked for again, not shown without them.
const META_VERSION = "m2";
const PREVIEW_SIZE = 512;
const PREVIEW_WAIT_MS = 400;

export async function fetchRaw(url) {
  const response = await fetch(url, { headers: { Accept: "application/octet-stream" } });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  const meta = JSON.parse(response.headers.get(META_HEADER) ?? "{}");
  return { meta, buffer: await response.arrayBuffer() };
}

// A grayscale frame: its meta, its uint16 values (rows x columns, C order) and the raw body's bytes (inflated),
// in which the presets' grey-level tables lie at their byte offsets.
export async function fetchPixels(url, { encoding = PIXEL_ENCODING } = {}) {
  const headers = { Accept: "application/octet-stream" };
  const response = await fetch(`${url}&encoding=${encoding}&meta=${META_VERSION}`, { headers });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  const meta = JSON.parse(response.headers.get(META_HEADER) ?? "{}");
  if (meta.encoding === "jpeg2000") {
    try {
      return await fromCodestream(meta, new Uint8Array(await response.arrayBuffer()));
    } catch (error) {
      // No WebAssembly here (an old browser, a stricter policy in front of Lumen): the deflated form instead.
      console.warn("JPEG 2000 frame not decoded here; asking for it deflated:", error);
      return fetchPixels(url, { encoding: "up-zigzag-shuffle-deflate" });
    }
  }
  const inflated = new Response(response.body.pipeThrough(new DecompressionStream("deflate")));
  const bytes = new Uint8Array(await inflated.arrayBuffer());
  return { meta, data: valuesFromPlanes(bytes, meta.rows, meta.columns), buffer: bytes.buffer };
}

// app/viewer/encodings.py undone: the low then the high bytes of zigzagged differences from the value above (in
// the first row: from the value to the left), modulo 2**16.
export function valuesFromPlanes(bytes, rows, columns) {
  const count = rows * columns;
  const out = new Uint16Array(count);
  let value = 0;
  for (let i = 0; i < count; i += 1) {
    const zigzag = bytes[i] | (bytes[count + i] << 8);
    const predicted = i < columns ? value : out[i - columns];
    value = (predicted + ((zigzag >>> 1) ^ -(zigzag & 1))) & 0xffff;
    out[i] = value;
  }
  return out;
}

// A `jpeg2000` body (app/viewer/jpeg2000.py): the codestream, decoded in the worker, then the raw body's tail
// (grey-level tables). Rebuilt in the raw body's layout: stored value = sample + sample_shift.
async function fromCodestream(meta, body) {
  const { info, samples } = await decodeJpeg2000(body.subarray(0, meta.codestream_length));
  const count = meta.rows * meta.columns;
  if (info.width !== meta.columns || info.height !== meta.rows || info.componentCount !== 1) {
    throw new Error(`the codestream is ${info.width} x ${info.height} x ${info.componentCount}, not the frame`);
  }
  const wide = samples.byteLength === 2 * count;
  const Samples = info.isSigned ? (wide ? Int16Array : Int8Array) : wide ? Uint16Array : Uint8Array;
  const decoded = new Samples(samples, 0, count);
  const tail = body.subarray(meta.codestream_length);
  const bytes = new Uint8Array(2 * count + tail.length);
  const data = new Uint16Array(bytes.buffer, 0, count);
  const shift = meta.sample_shift;
  for (let i = 0; i < count; i += 1) data[i] = decoded[i] + shift;
  bytes.set(tail, 2 * count);
  return { meta, data, buffer: bytes.buffer };
}

let jpeg2000Worker = null;
let jpeg2000Calls = 0;
const jpeg2000Waiting = new Map(); // call id -> { resolve, reject }

// One worker for the page, started on the first codestream; each call gets its own answer.
function decodeJpeg2000(codestream) {
  if (!jpeg2000Worker) {
    jpeg2000Worker = new Worker("/static/jpeg2000_worker.js");
    jpeg2000Worker.onmessage = ({ data }) => {
      const waiting = jpeg2000Waiting.get(data.id);
      jpeg2000Waiting.delete(data.id);
      if (data.error) waiting?.reject(new Error(`JPEG 2000 decode: ${data.error}`));
      else waiting?.resolve(data);
    };
    jpeg2000Worker.onerror = (event) => {
      for (const waiting of jpeg2000Waiting.values()) waiting.reject(new Error(`JPEG 2000 worker: ${event.message}`));
      jpeg2000Waiting.clear();
    };
  }
  const id = (jpeg2000Calls += 1);
  const copy = codestream.slice(); // transferred: the response's bytes stay whole
  return new Promise((resolve, reject) => {
    jpeg2000Waiting.set(id, { resolve, reject });
    jpeg2000Worker.postMessage({ id, codestream: copy }, [copy.buffer]);
  });
}

// A full-resolution colour frame decoded off the main thread, without colour management: the server decodes
// (and renders) its pixels without any.
async function loadBitmap(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return createImageBitmap(await response.blob(), { colorSpaceConversion: "none" });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.decoding = "async";
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`${url} did not load`));
    image.src = url;
  });
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

export class Viewport {
  constructor({ stage, canvas, overlay, onPaint, onChange }) {
    this.stage = stage;
    this.canvas = canvas;
    this.overlay = overlay;
    this.ctx = canvas.getContext("2d");
    this.octx = overlay.getContext("2d");
    this.onPaint = onPaint ?? (() => {});
    this.onChange = onChange ?? (() => {});
    this.tool = "wl";
    this.tools = new Map(); // tool name -> {down, move, up}(point in image pixels, event)
    this.layers = []; // {draw()}: redrawn over the image whenever it moves
    this.heatmapSource = null;
    this.pending = false;
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(stage);
    this.bindPointer();
  }

  async open(instance) {
    this.instance = instance;
    this.width = instance.columns;
    this.height = instance.rows;
    this.frame = 0;
    this.frames = new Map(); // frame -> {kind, meta, data | base}
    this.source = null;
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.invert = false;
    this.window = null;
    this.presetKey = null;
    this.presets = [];
    this.token = Symbol("open");
    this.settled = false;
    const token = this.token;
    this.resize();
    const preview = loadImage(`/api/instances/${instance.id}/image.png?max_size=${PREVIEW_SIZE}`).then((image) => {
      if (this.token === token && !this.source) {
        this.source = image;
        this.sourceKind = "preview";
        this.draw();
        this.onPaint("preview");
      }
    });
    // The full frame is asked for once the preview is in (or late): decoding it keeps the server's Python busy
    // (the JPEG 2000 decoders hold the GIL), and the preview, a file read, would wait behind it.
    await Promise.race([preview.catch(() => {}), delay(PREVIEW_WAIT_MS)]);
    if (this.token !== token) return;
    await this.showFrame(0, await this.loadFrame(0), token);
    if (this.token !== token) return;
    this.settled = true;
    this.stage.dispatchEvent(new CustomEvent("viewportopened"));
  }

  // Take another viewport's zoom and pan (relative to each one's fitted image, in stage pixels) and, when asked,
  // its window. Changes nothing, and says nothing, when they are already the same: linked cells stop there.
  follow(other, { window = false } = {}) {
    if (window && other.window && this.window && !sameWindow(this.window, other.window)) {
      this.window = { ...other.window };
      this.presetKey = other.presetKey;
      this.requestRender();
    }
    if (this.zoom === other.zoom && this.panX === other.panX && this.panY === other.panY) return;
    this.zoom = other.zoom;
    this.panX = other.panX;
    this.panY = other.panY;
    this.draw();
    this.changed();
  }

  async loadFrame(frame) {
    if (this.frames.has(frame)) return this.frames.get(frame);
    const id = this.instance.id;
    let entry;
    if (this.instance.colour) {
      const image = await loadBitmap(`/api/instances/${id}/image?frame=${frame}`);
      const canvas = canvasOf(image.width, image.height);
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(image, 0, 0);
      image.close();
      const base = ctx.getImageData(0, 0, canvas.width, canvas.height);
      // [0, 255] onto itself.
      const identity = { key: 1, name: "Default", center: 127.5, width: 255, function: "LINEAR_EXACT" };
      entry = { kind: "rgb", base, meta: { presets: [identity] }, levels: new Map() };
    } else {
      const { meta, data, buffer } = await fetchPixels(`/api/instances/${id}/pixels?frame=${frame}`);
      // The grey levels of the presets that are VOI LUTs, by preset key.
      const levels = new Map(
        (meta.presets ?? [])
          .filter((preset) => preset.table != null)
          .map((preset) => [preset.key, new Uint8Array(buffer, preset.table, meta.stored_max + 1)]),
      );
      entry = { kind: "gray", meta, data, levels };
    }
    this.frames.set(frame, entry);
    return entry;
  }

  async showFrame(frame, entry, token = this.token) {
    entry = entry ?? (await this.loadFrame(frame));
    if (token !== this.token) return;
    this.frame = frame;
    this.entry = entry;
    if (!this.window) {
      this.presets = entry.meta.presets ?? [];
      this.window = windowOf(this.presets[0] ?? { center: 127.5, width: 255, function: "LINEAR_EXACT" });
      this.presetKey = this.presets[0]?.key ?? null;
    }
    if (!this.rendered || this.rendered.width !== this.entryWidth()) {
      this.rendered = canvasOf(this.entryWidth(), this.entryHeight());
      this.rctx = this.rendered.getContext("2d");
      this.renderedImage = this.rctx.createImageData(this.rendered.width, this.rendered.height);
    }
    this.renderWindow();
    const first = this.sourceKind !== "full";
    this.source = this.rendered;
    this.sourceKind = "full";
    this.draw();
    if (first) this.onPaint("full");
    this.changed();
  }

  changed() {
    this.onChange();
    this.stage.dispatchEvent(new CustomEvent("viewportchange"));
  }

  // A point of the stage (CSS pixels from its top left) in image pixels (columns, rows; 0 at the image's left
  // and top edge, so pixel i spans [i, i + 1)), and back.
  toImage(x, y) {
    const s = this.fitScale() * this.zoom;
    const x0 = this.stageWidth / 2 + this.panX - (this.width * s) / 2;
    const y0 = this.stageHeight / 2 + this.panY - (this.height * s) / 2;
    return { x: (x - x0) / s, y: (y - y0) / s };
  }

  toStage(point) {
    const s = this.fitScale() * this.zoom;
    const x0 = this.stageWidth / 2 + this.panX - (this.width * s) / 2;
    const y0 = this.stageHeight / 2 + this.panY - (this.height * s) / 2;
    return { x: x0 + point.x * s, y: y0 + point.y * s };
  }

  entryWidth() {
    return this.entry.kind === "gray" ? this.entry.meta.columns : this.entry.base.width;
  }

  entryHeight() {
    return this.entry.kind === "gray" ? this.entry.meta.rows : this.entry.base.height;
  }

  // The VOI LUT from stored values to packed RGBA, then one pass over the pixels.
  renderWindow() {
    const entry = this.entry;
    const monochrome1 = entry.kind === "gray" && entry.meta.photometric === "MONOCHROME1";
    const flip = monochrome1 !== this.invert;
    const out = new Uint32Array(this.renderedImage.data.buffer);
    if (entry.kind === "gray") {
      const levels = voiLevels(entry.meta, this.window, entry.levels);
      const lut = new Uint32Array(levels.length);
      for (let s = 0; s < levels.length; s += 1) {
        const v = flip ? 255 - levels[s] : levels[s];
        lut[s] = 0xff000000 | (v << 16) | (v << 8) | v;
      }
      const data = entry.data;
      for (let i = 0; i < data.length; i += 1) out[i] = lut[data[i]];
    } else {
      const lut = new Uint8ClampedArray(256);
      for (let s = 0; s < 256; s += 1) {
        const v = voiLevel(s, this.window);
        lut[s] = flip ? 255 - v : v;
      }
      const src = entry.base.data;
      const dst = this.renderedImage.data;
      for (let i = 0; i < src.length; i += 4) {
        dst[i] = lut[src[i]];
        dst[i + 1] = lut[src[i + 1]];
        dst[i + 2] = lut[src[i + 2]];
        dst[i + 3] = 255;
      }
    }
    this.rctx.putImageData(this.renderedImage, 0, 0);
  }

  resize() {
    const rect = this.stage.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    for (const canvas of [this.canvas, this.overlay]) {
      canvas.width = Math.max(1, Math.round(rect.width * dpr));
      canvas.height = Math.max(1, Math.round(rect.height * dpr));
    }
    this.stageWidth = rect.width;
    this.stageHeight = rect.height;
    this.draw();
  }

  fitScale() {
    if (!this.width || !this.stageWidth) return 1;
    return Math.min(this.stageWidth / this.width, this.stageHeight / this.height);
  }

  transform(ctx) {
    const dpr = window.devicePixelRatio || 1;
    const s = this.fitScale() * this.zoom;
    const x = this.stageWidth / 2 + this.panX - (this.width * s) / 2;
    const y = this.stageHeight / 2 + this.panY - (this.height * s) / 2;
    ctx.setTransform(dpr * s, 0, 0, dpr * s, dpr * x, dpr * y);
    return s;
  }

  draw() {
    if (!this.ctx) return;
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.source) {
      const s = this.transform(ctx);
      ctx.imageSmoothingEnabled = s < 2;
      ctx.drawImage(this.source, 0, 0, this.width, this.height);
    }
    this.drawOverlay();
    for (const layer of this.layers) layer.draw();
  }

  setHeatmap(source) {
    this.heatmapSource = source;
    this.drawOverlay();
  }

  drawOverlay() {
    const ctx = this.octx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    if (!this.heatmapSource || !this.source) return;
    this.transform(ctx);
    // Heatmaps are stored in the image's frame at lower resolution: stretched over the whole image.
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.heatmapSource, 0, 0, this.width, this.height);
  }

  requestRender() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (this.entry) this.renderWindow();
      this.draw();
      this.changed();
    });
  }

  // A reader's own window keeps the VOI LUT Function of the one it started from (a VOI LUT becomes its span).
  setWindow(center, width) {
    this.window = { center, width: Math.max(1, width), function: this.window?.function ?? "LINEAR", table: null };
    this.presetKey = null;
    this.requestRender();
  }

  applyPreset(key) {
    const preset = this.presets.find((item) => item.key === key);
    if (preset) {
      this.window = windowOf(preset);
      this.presetKey = preset.key;
      this.requestRender();
    }
    return preset;
  }

  toggleInvert() {
    this.invert = !this.invert;
    this.requestRender();
  }

  zoomBy(factor, atX = this.stageWidth / 2, atY = this.stageHeight / 2) {
    const zoom = Math.min(40, Math.max(0.1, this.zoom * factor));
    const applied = zoom / this.zoom;
    // Keep the image point under the cursor where it is.
    const cx = atX - this.stageWidth / 2 - this.panX;
    const cy = atY - this.stageHeight / 2 - this.panY;
    this.panX -= cx * (applied - 1);
    this.panY -= cy * (applied - 1);
    this.zoom = zoom;
    this.draw();
    this.changed();
  }

  fit() {
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.draw();
    this.changed();
  }

  reset() {
    this.invert = false;
    const first = this.presets[0];
    if (first) {
      this.window = windowOf(first);
      this.presetKey = first.key;
    }
    this.fit();
    this.requestRender();
  }

  valueRange() {
    const meta = this.entry?.meta;
    if (!meta || this.entry.kind !== "gray") return 256;
    return Math.max(1, meta.stored_max * meta.scale);
  }

  bindPointer() {
    let drag = null;
    this.stage.addEventListener("contextmenu", (event) => event.preventDefault());
    this.stage.addEventListener("pointerdown", (event) => {
      // Controls over the image (the method grid's panels) keep their clicks: capturing the pointer for a
      // drag would send the click to the stage instead.
      if (event.target.closest("button, a, input, select")) return;
      const other = this.tool === "wl" ? "pan" : "wl";
      const mode = event.button === 1 ? "pan" : event.button === 2 ? other : this.tool;
      drag = { mode, x: event.clientX, y: event.clientY, window: { ...this.window }, tool: this.tools.get(mode) };
      drag.tool?.down(this.eventPoint(event), event);
      this.stage.setPointerCapture(event.pointerId);
      this.stage.focus({ preventScroll: true });
    });
    this.stage.addEventListener("pointermove", (event) => {
      if (!drag) {
        this.tools.get(this.tool)?.hover?.(this.eventPoint(event), event);
        return;
      }
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (drag.tool) {
        drag.tool.move(this.eventPoint(event), event);
      } else if (drag.mode === "pan") {
        this.panX += dx;
        this.panY += dy;
        drag.x = event.clientX;
        drag.y = event.clientY;
        this.draw();
        this.changed();
      } else if (this.window) {
        const step = this.valueRange() / 512;
        this.setWindow(drag.window.center + dy * step, drag.window.width + dx * step);
      }
    });
    const end = (event) => {
      drag?.tool?.up(this.eventPoint(event), event);
      drag = null;
    };
    this.stage.addEventListener("pointerup", end);
    this.stage.addEventListener("pointercancel", end);
    this.stage.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const delta = event.deltaY || event.deltaX;
        if (event.shiftKey || event.ctrlKey || event.altKey) {
          this.onFrameStep?.(delta > 0 ? 1 : -1);
          return;
        }
        const rect = this.stage.getBoundingClientRect();
        this.zoomBy(Math.exp(-delta * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
      },
      { passive: false },
    );
  }

  eventPoint(event) {
    const rect = this.stage.getBoundingClientRect();
    return this.toImage(event.clientX - rect.left, event.clientY - rect.top);
  }
}

function sameWindow(a, b) {
  return a.center === b.center && a.width === b.width && a.function === b.function && a.table === b.table;
}

// A preset of the server as the viewport's window: its center, width, VOI LUT Function, and the key of its grey
// levels when it is a VOI LUT.
function windowOf(preset) {
  const table = preset.table != null ? preset.key : null;
  return { center: preset.center, width: preset.width, function: preset.function ?? "LINEAR", table };
}

// Grey levels (0-255) for stored values 0..stored_max: the server's for a VOI LUT preset of this frame, else
// the window's function.
export function voiLevels(meta, window, levels = new Map()) {
  const table = window.table != null ? levels.get(window.table) : undefined;
  if (table) return table;
  const { offset, scale, stored_max: top } = meta;
  const out = new Uint8Array(top + 1);
  for (let s = 0; s <= top; s += 1) out[s] = voiLevel(s * scale + offset, window);
  return out;
}

// A window's VOI LUT Function (DICOM PS3.3 C.11.2.1.2-3) as pydicom's apply_voi_lut computes it, its output
// range [0, 1] rounded to 0-255 as the server's renderings are (halves up).
export function voiLevel(value, { center, width, function: fn = "LINEAR" }) {
  let y;
  if (fn === "SIGMOID") {
    y = 1 / (1 + Math.exp((-4 * (value - center)) / width));
  } else {
    const c = fn === "LINEAR" ? center - 0.5 : center;
    const w = fn === "LINEAR" ? width - 1 : width;
    if (value <= c - w / 2) y = 0;
    else if (value > c + w / 2) y = 1;
    else y = (value - c) / w + 0.5;
  }
  return Math.floor(y * 255 + 0.5);
}
