// The pure parts of the FuseDream score chart: series buffering, downsampling to the widget's width, axis
// scaling and panel layout. No DOM, no ComfyUI, no side effects at import (ComfyUI loads every .js under
// web/js as an ES module), so `node --test tests/js/` tests all of it.

/** Websocket event sent by nodes/monitor.py while an optimizing node runs. */
export const EVENT = "fusedream.progress";
/** Key of the node's `ui` output holding the whole run's series (kept in ComfyUI's history). */
export const UI_KEY = "fusedream_series";
/** Points kept per run in the browser; beyond it every other point is dropped (the run stays evenly covered). */
export const MAX_POINTS = 4000;

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/**
 * The named series of one node's current run, as rows `{step, values}` in step order.
 * Filled from live events (`addEvent`) or from a finished run's `ui` output (`loadUi`).
 */
export class SeriesBuffer {
  constructor(maxPoints = MAX_POINTS) {
    this.maxPoints = Math.max(2, maxPoints);
    this.reset();
  }

  reset(label = "", total = 0) {
    this.label = label;
    this.total = total;
    this.steps = [];
    this.rows = [];
    this.names = [];
    this.stride = 1;
    this.seen = 0;
  }

  get length() {
    return this.steps.length;
  }

  get lastStep() {
    return this.steps.length ? this.steps[this.steps.length - 1] : 0;
  }

  /** Add the values at `step`; a step not after the last one starts a new run (the node was re-run). */
  addPoint(step, values, last = false) {
    if (this.steps.length && step <= this.lastStep) this.reset(this.label, this.total);
    for (const name of Object.keys(values)) if (!this.names.includes(name)) this.names.push(name);
    const keep = last || this.seen % this.stride === 0;
    this.seen += 1;
    if (!keep) return;
    this.steps.push(step);
    this.rows.push(values);
    if (this.steps.length > this.maxPoints) this.#thin(last);
  }

  #thin(keepLast) {
    this.stride *= 2;
    const idx = [];
    for (let i = 0; i < this.steps.length; i += 2) idx.push(i);
    if (keepLast && idx[idx.length - 1] !== this.steps.length - 1) idx.push(this.steps.length - 1);
    this.steps = idx.map((i) => this.steps[i]);
    this.rows = idx.map((i) => this.rows[i]);
  }

  /** One `fusedream.progress` event's detail; uses its `chunk` (every point since the last event) if present. */
  addEvent(detail) {
    if (!detail || !isNum(detail.step)) return;
    if (typeof detail.label === "string") this.label = detail.label;
    if (isNum(detail.total)) this.total = detail.total;
    const chunk = detail.chunk;
    if (chunk && Array.isArray(chunk.steps) && chunk.steps.length) {
      const names = Object.keys(chunk.series || {});
      chunk.steps.forEach((step, i) => {
        const values = {};
        for (const name of names) {
          const v = chunk.series[name][i];
          if (isNum(v)) values[name] = v;
        }
        this.addPoint(step, values, step === detail.total);
      });
    } else {
      this.addPoint(detail.step, { ...(detail.series || {}) }, detail.step === detail.total);
    }
  }

  /** Replace the content with one entry of the node's `ui` output (`{label, total, steps, series}`). */
  loadUi(entry) {
    this.reset(entry?.label ?? "", isNum(entry?.total) ? entry.total : 0);
    const steps = Array.isArray(entry?.steps) ? entry.steps : [];
    const series = entry?.series || {};
    const names = Object.keys(series);
    this.names = names.slice();
    steps.forEach((step, i) => {
      const values = {};
      for (const name of names) {
        const v = series[name]?.[i];
        if (isNum(v)) values[name] = v;
      }
      this.steps.push(step);
      this.rows.push(values);
    });
    while (this.steps.length > this.maxPoints) this.#thin(true);
    if (!this.total && steps.length) this.total = this.lastStep;
  }

  /** The points of one series as parallel arrays, steps without a value skipped. */
  column(name) {
    const xs = [];
    const ys = [];
    this.rows.forEach((row, i) => {
      if (isNum(row[name])) {
        xs.push(this.steps[i]);
        ys.push(row[name]);
      }
    });
    return { xs, ys };
  }

  latest(name) {
    for (let i = this.rows.length - 1; i >= 0; i--) if (isNum(this.rows[i][name])) return this.rows[i][name];
    return null;
  }
}

/** The last run entry of a node's `ui` output, or null when the output carries no series. */
export function seriesFromOutput(output) {
  const list = output?.[UI_KEY];
  return Array.isArray(list) && list.length ? list[list.length - 1] : null;
}

/**
 * Reduce a line to at most ~2 points per pixel column of `width`: per column the min and the max, in step
 * order, so spikes survive (a plain stride would drop them). `xs` must be ascending; the first and last points
 * are always kept.
 */
export function downsampleMinMax(xs, ys, width, x0 = xs[0], x1 = xs[xs.length - 1]) {
  const n = xs.length;
  const columns = Math.max(1, Math.floor(width));
  if (n <= 2 * columns) return { xs: xs.slice(), ys: ys.slice() };
  const span = x1 - x0 || 1;
  const outX = [];
  const outY = [];
  let i = 0;
  while (i < n) {
    const col = Math.min(columns - 1, Math.floor(((xs[i] - x0) / span) * columns));
    let lo = i;
    let hi = i;
    let j = i;
    while (j < n && Math.min(columns - 1, Math.floor(((xs[j] - x0) / span) * columns)) === col) {
      if (ys[j] < ys[lo]) lo = j;
      if (ys[j] > ys[hi]) hi = j;
      j++;
    }
    const keep = new Set([lo, hi]);
    if (i === 0) keep.add(0);
    if (j === n) keep.add(n - 1);
    for (const k of [...keep].sort((a, b) => a - b)) {
      outX.push(xs[k]);
      outY.push(ys[k]);
    }
    i = j;
  }
  return { xs: outX, ys: outY };
}

/** Finite min and max of `values`; a constant series gets a small symmetric pad; null when nothing is finite. */
export function valueRange(values) {
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (!isNum(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (min === Infinity) return null;
  if (min === max) {
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.05 : 1;
    return [min - pad, max + pad];
  }
  return [min, max];
}

/** A "nice" step (1, 2 or 5 × 10^k) so that `span` holds about `count` intervals. */
export function niceStep(span, count = 4) {
  const raw = Math.abs(span) / Math.max(1, count);
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / power;
  const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nice * power;
}

/** Axis bounds widened to multiples of a nice step, and the tick values between them. */
export function niceTicks(min, max, count = 4) {
  const step = niceStep(max - min, count);
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let k = 0, v = lo; v <= hi + step * 1e-6 && k < 100; k++, v = lo + k * step) {
    ticks.push(Number(v.toFixed(12)));
  }
  return { min: lo, max: hi === lo ? lo + step : hi, step, ticks };
}

/** A linear map from the domain [d0, d1] to the range [r0, r1] (a degenerate domain maps to the middle). */
export function linearScale(d0, d1, r0, r1) {
  const span = d1 - d0;
  if (!span) return () => (r0 + r1) / 2;
  const k = (r1 - r0) / span;
  return (v) => r0 + (v - d0) * k;
}

/** Tick label: as many decimals as the tick step needs, none for integers. */
export function formatTick(value, step) {
  const decimals = step >= 1 || !(step > 0) ? 0 : Math.min(8, Math.ceil(-Math.log10(step) - 1e-9));
  return value.toFixed(decimals);
}

/** A value for the legend: 4 significant digits. */
export function formatValue(value) {
  if (!isNum(value)) return "–";
  if (value !== 0 && (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3)) return value.toExponential(2);
  return Number(value.toPrecision(4)).toString();
}

/**
 * One horizontal panel per series, stacked (small multiples: each series keeps its own y scale, as the
 * papers plot AugCLIP and LPIPS separately). Returns `[{x, y, w, h}]` plot rectangles inside `width`×`height`
 * leaving `left` for y labels, `top` per panel for its title and `bottom` for the shared x axis.
 */
export function layoutPanels(count, width, height, { left = 40, right = 8, top = 14, bottom = 16, gap = 4 } = {}) {
  if (count <= 0) return [];
  const w = Math.max(1, width - left - right);
  const avail = Math.max(count, height - bottom - gap * (count - 1));
  const each = avail / count;
  const panels = [];
  for (let i = 0; i < count; i++) {
    const y0 = i * (each + gap);
    panels.push({ x: left, y: y0 + top, w, h: Math.max(1, each - top) });
  }
  return panels;
}
