// Heatmaps as raw float16 arrays, coloured in the browser: colour map, threshold and opacity change
// without a server round trip. Normalising is for display only; the stored attribution stays raw.
import { fetchRaw } from "./viewer.js";

const MAX_ALPHA = 230; // a little of the image always shows through the strongest attribution

function float16Table() {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h += 1) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    let value;
    if (exponent === 0) value = fraction * 2 ** -24;
    else if (exponent === 31) value = fraction ? NaN : Infinity;
    else value = (1 + fraction / 1024) * 2 ** (exponent - 15);
    table[h] = sign * value;
  }
  return table;
}

let f16 = null;

export function decode(buffer, dtype) {
  if (dtype === "float32") return new Float32Array(buffer);
  if (dtype !== "float16") throw new Error(`heatmap dtype ${dtype} is not supported`);
  f16 ??= float16Table();
  const halves = new Uint16Array(buffer);
  const values = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i += 1) {
    const v = f16[halves[i]];
    values[i] = Number.isFinite(v) ? v : 0;
  }
  return values;
}

export async function loadHeatmap(id) {
  const [{ meta, buffer }] = await Promise.all([fetchRaw(`/api/heatmaps/${id}/data`), loadColourTables()]);
  const values = decode(buffer, meta.dtype);
  let peak = 0;
  for (let i = 0; i < values.length; i += 1) peak = Math.max(peak, Math.abs(values[i]));
  return { meta, values, peak, width: meta.shape[1], height: meta.shape[0] };
}

// The colour maps as 256-entry RGB tables made by the server from matplotlib (app/viewer/colormaps.py): the
// overlay PNG and this page colour with the same bytes. Fetched once, before the first heatmap is coloured.
const TABLES_URL = new URL("./colormaps.json", import.meta.url);
let tablesLoading = null;
let tables = null;

export function loadColourTables() {
  tablesLoading ??= fetch(TABLES_URL)
    .then((response) => {
      if (!response.ok) throw new Error(`${TABLES_URL} answered ${response.status}`);
      return response.json();
    })
    .then((json) => {
      tables = Object.fromEntries(Object.entries(json).map(([name, rgb]) => [name, Uint8Array.from(rgb)]));
      return tables;
    });
  return tablesLoading;
}

// (256 * 3) RGB of a colour map; `loadColourTables` has resolved (loadHeatmap waits for it).
export function colourTable(name) {
  if (!tables) throw new Error("the colour tables are not loaded yet");
  return tables[name] ?? tables.jet;
}

export function isSigned(heatmap) {
  return heatmap.meta.value_min < 0;
}

export function resolveMap(heatmap, name) {
  if (name !== "auto") return name;
  return isSigned(heatmap) ? "diverging" : "jet";
}

// Signed maps: colour from v / peak on a diverging map (blue negative, red positive), alpha from |v| / peak.
// Unsigned maps: colour and alpha from (v - min) / (max - min) on a sequential map.
export function colourise(heatmap, { colormap, threshold }, target) {
  const name = resolveMap(heatmap, colormap);
  const table = colourTable(name);
  const { values, width, height } = heatmap;
  const canvas = target ?? document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const out = image.data;
  const diverging = name === "diverging";
  const low = diverging ? -heatmap.peak : Math.min(0, heatmap.meta.value_min);
  const span = diverging ? 2 * heatmap.peak : Math.max(heatmap.meta.value_max, heatmap.peak) - low;
  for (let i = 0; i < values.length; i += 1) {
    const v = values[i];
    const magnitude = heatmap.peak > 0 ? Math.abs(v) / heatmap.peak : 0;
    const t = span > 0 ? (v - low) / span : 0;
    const strength = diverging ? magnitude : t;
    if (strength <= threshold || strength <= 0) continue;
    const index = Math.min(255, Math.max(0, Math.round(t * 255))) * 3;
    const o = i * 4;
    out[o] = table[index];
    out[o + 1] = table[index + 1];
    out[o + 2] = table[index + 2];
    out[o + 3] = Math.round(strength * MAX_ALPHA);
  }
  ctx.putImageData(image, 0, 0);
  return { canvas, name, low, high: low + span };
}

export function drawColourbar(canvas, name) {
  const table = colourTable(name);
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < canvas.width; x += 1) {
    const i = Math.round((x / (canvas.width - 1)) * 255) * 3;
    ctx.fillStyle = `rgb(${table[i]}, ${table[i + 1]}, ${table[i + 2]})`;
    ctx.fillRect(x, 0, 1, canvas.height);
  }
}

export function formatValue(value) {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  if (abs >= 100) return String(Math.round(value));
  return abs < 0.01 ? value.toExponential(1) : value.toPrecision(3).replace(/\.?0+$/, "");
}
