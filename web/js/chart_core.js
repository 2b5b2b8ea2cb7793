// The pure parts of the FuseDream score chart: series buffering, downsampling to the widget's width, axis
// scaling, panel grouping and layout, the run state shown on the chart. No DOM, no ComfyUI, no side effects at
// import (ComfyUI loads every .js under web/js as an ES module), so `node --test tests/js/` tests all of it.
//
// Everything here reads data that comes from outside the page (websocket events, stored outputs, the history):
// a malformed point (a step or value that is not a finite number, a series that is not an array, steps out of
// order) is ignored, never drawn, and never makes a loop run longer than the input it was given.

/** Websocket event sent by nodes/monitor.py while an optimizing node runs. */
export const EVENT = "fusedream.progress";
/** Key of the node's `ui` output holding the whole run's series (kept in ComfyUI's history). */
export const UI_KEY = "fusedream_series";
/** Points kept per run in the browser; beyond it every other point is dropped (the run stays evenly covered). */
export const MAX_POINTS = 4000;
/** Series kept per run; further names are ignored (the ops report one to three). */
export const MAX_SERIES = 8;
/** Pixel columns a line is reduced to at most (a wider widget still gets this many). */
export const MAX_COLUMNS = 4096;
/** Smallest plot height (CSS px, title excluded) of a panel, so its tick labels stay readable at 80 % zoom. */
export const MIN_PLOT_HEIGHT = 56;
/** Height of the line above the panels that holds the run-state mark (cancelled, stale, cached). */
export const MARK_HEIGHT = 16;
/** Height the chart widget reserves on a node (CSS px): two panels of at least MIN_PLOT_HEIGHT, their titles, the
 * mark line and the x axis. */
export const CHART_HEIGHT = 210;

export const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** Values of a row restricted to finite numbers under string names. */
function finiteValues(values, names) {
  const out = {};
  if (!values || typeof values !== "object") return out;
  for (const name of names) {
    const v = values[name];
    if (isNum(v)) out[name] = v;
  }
  return out;
}

/**
 * The named series of one node's current run, as rows `{step, values}` in increasing step order.
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
    this.segment = null;
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

  /** The names of `source` (an object) this buffer draws: the known ones it has, then new ones for which
   * `accept(value)` holds, until MAX_SERIES names are known. Each key is looked at once and the loop stops at
   * the cap, so an event with thousands of series costs no more than one with MAX_SERIES. */
  #columns(source, accept) {
    const out = this.names.filter((name) => Object.hasOwn(source, name) && accept(source[name]));
    if (this.names.length >= MAX_SERIES) return out;
    for (const name in source) {
      if (!Object.hasOwn(source, name) || this.names.includes(name) || !accept(source[name])) continue;
      this.names.push(name);
      out.push(name);
      if (this.names.length >= MAX_SERIES) break;
    }
    return out;
  }

  /** Add the values at `step`; a step not after the last one starts a new run (the node was re-run).
   * A step that is not a finite number is ignored, and so is every value that is not one. */
  addPoint(step, values, last = false) {
    if (!isNum(step)) return;
    if (this.steps.length && step <= this.lastStep) this.reset(this.label, this.total);
    if (values && typeof values === "object") this.#columns(values, isNum);
    const keep = last || this.seen % this.stride === 0;
    this.seen += 1;
    if (!keep) return;
    this.steps.push(step);
    this.rows.push(finiteValues(values, this.names));
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
    if (!detail || typeof detail !== "object" || !isNum(detail.step)) return;
    if (typeof detail.label === "string") this.label = detail.label.slice(0, 80);
    if (isNum(detail.total) && detail.total > 0) this.total = detail.total;
    const chunk = detail.chunk;
    if (chunk && typeof chunk === "object" && Array.isArray(chunk.steps) && chunk.steps.length) {
      const series = chunk.series && typeof chunk.series === "object" ? chunk.series : {};
      if (chunk.steps[0] <= this.lastStep) this.reset(this.label, this.total); // a re-run: its names start over
      const columns = this.#columns(series, Array.isArray); // capped before the loop over the steps
      chunk.steps.forEach((step, i) => {
        const values = {};
        for (const name of columns) values[name] = series[name][i];
        this.addPoint(step, values, step === detail.total);
      });
    } else {
      this.addPoint(detail.step, detail.series, detail.step === detail.total);
    }
    if ("segment" in detail) this.segment = cleanSegment(detail.segment);
  }

  /** Replace the content with one entry of the node's `ui` output (`{label, total, steps, series}`).
   * Points are put in step order; a repeated step keeps its last point. */
  loadUi(entry) {
    const ok = entry && typeof entry === "object";
    const label = ok && typeof entry.label === "string" ? entry.label.slice(0, 80) : "";
    this.reset(label, ok && isNum(entry.total) && entry.total > 0 ? entry.total : 0);
    const steps = ok && Array.isArray(entry.steps) ? entry.steps : [];
    const series = ok && entry.series && typeof entry.series === "object" ? entry.series : {};
    const names = Object.keys(series).filter((name) => Array.isArray(series[name])).slice(0, MAX_SERIES);
    const order = [];
    steps.forEach((step, i) => {
      if (isNum(step)) order.push(i);
    });
    order.sort((a, b) => steps[a] - steps[b] || a - b);
    const used = new Set();
    order.forEach((i, k) => {
      if (k + 1 < order.length && steps[order[k + 1]] === steps[i]) return;
      const values = {};
      for (const name of names) values[name] = series[name][i];
      const row = finiteValues(values, names);
      for (const name of Object.keys(row)) used.add(name);
      this.steps.push(steps[i]);
      this.rows.push(row);
    });
    this.names = names.filter((name) => used.has(name));
    while (this.steps.length > this.maxPoints) this.#thin(true);
    if (!this.total && this.steps.length) this.total = this.lastStep;
    this.segment = ok ? cleanSegment(entry.segment) : null;
  }

  /** A copy holding this buffer's points and, after them, the points of `newer` past its last step (a series
   * the server kept, completed by what the page saw live after it). */
  extendedWith(newer) {
    const out = new SeriesBuffer(this.maxPoints);
    out.loadUi({ label: this.label, total: this.total, steps: this.steps, segment: this.segment,
                 series: Object.fromEntries(this.names.map((n) => [n, this.rows.map((r) => r[n] ?? null)])) });
    if (!newer) return out;
    newer.rows.forEach((row, i) => {
      if (newer.steps[i] > out.lastStep) out.addPoint(newer.steps[i], row, newer.steps[i] === newer.total);
    });
    if (newer.total) out.total = newer.total;
    return out;
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

/** Labels kept of a segment, and their length (the server sends at most 256 of 40 characters). */
export const MAX_SEGMENT_LABELS = 256;
const MAX_LABEL = 40;

/**
 * A node that runs one optimisation after another (the composition grid search: one per cell) says so with
 * `segment: {unit, size, labels}`: `size` steps per run, one label per run. Null when absent or malformed.
 */
export function cleanSegment(segment) {
  if (!segment || typeof segment !== "object" || !isNum(segment.size) || segment.size < 1) return null;
  const unit = typeof segment.unit === "string" && segment.unit ? segment.unit.slice(0, 16) : "run";
  const labels = Array.isArray(segment.labels)
    ? segment.labels.slice(0, MAX_SEGMENT_LABELS).map((l) => (typeof l === "string" ? l.slice(0, MAX_LABEL) : ""))
    : [];
  return { unit, size: Math.floor(segment.size), labels };
}

/**
 * Where a run stands, in the units of the node's widgets: "step 7 / 10", or for a segmented run "cell 4 / 18
 * (0.65 center) · step 7 / 10" — the cell's own step, not the 67th of 180.
 */
export function describeProgress(step, total, segment = null) {
  const s = isNum(step) ? step : 0;
  const t = isNum(total) && total > 0 ? total : 0;
  if (!segment) return `step ${s} / ${t || "?"}`;
  const size = segment.size;
  const index = Math.max(1, Math.ceil(s / size));
  const count = t ? Math.max(index, Math.ceil(t / size)) : "?";
  const label = segment.labels[index - 1];
  const within = s - (index - 1) * size;
  return `${segment.unit} ${index} / ${count}${label ? ` (${label})` : ""} · step ${within} / ${size}`;
}

/** The run (0-based) a step of a segmented run belongs to. */
export const segmentOf = (step, size) => Math.max(0, Math.ceil(step / size) - 1);

/** The last run entry of a node's `ui` output, or null when the output carries no series. */
export function seriesFromOutput(output) {
  const list = output && typeof output === "object" ? output[UI_KEY] : null;
  if (!Array.isArray(list) || !list.length) return null;
  const entry = list[list.length - 1];
  return entry && typeof entry === "object" && !Array.isArray(entry) ? entry : null;
}

/** The finite (x, y) pairs of two parallel arrays, in increasing x; of repeated x's the last is kept. */
export function finitePairs(xs, ys) {
  const px = [];
  const py = [];
  if (!Array.isArray(xs) || !Array.isArray(ys)) return { xs: px, ys: py };
  const n = Math.min(xs.length, ys.length);
  let sorted = true;
  for (let i = 0; i < n; i++) {
    if (!isNum(xs[i]) || !isNum(ys[i])) continue;
    if (px.length && xs[i] <= px[px.length - 1]) sorted = false;
    px.push(xs[i]);
    py.push(ys[i]);
  }
  if (sorted) return { xs: px, ys: py };
  const idx = px.map((_, i) => i).sort((a, b) => px[a] - px[b] || a - b);
  const ox = [];
  const oy = [];
  idx.forEach((i, k) => {
    if (k + 1 < idx.length && px[idx[k + 1]] === px[i]) return;
    ox.push(px[i]);
    oy.push(py[i]);
  });
  return { xs: ox, ys: oy };
}

/**
 * Reduce a line to at most ~2 points per pixel column of `width`: per column the min and the max, in step
 * order, so spikes survive (a plain stride would drop them). Malformed points are dropped first and the rest
 * put in step order (`finitePairs`); the first and last points are always kept. One pass over the points.
 */
export function downsampleMinMax(xs, ys, width, x0, x1) {
  const pts = finitePairs(xs, ys);
  const n = pts.xs.length;
  const columns = isNum(width) ? Math.min(MAX_COLUMNS, Math.max(1, Math.floor(width))) : 1;
  if (n <= 2 * columns) return pts;
  const lo0 = isNum(x0) ? x0 : pts.xs[0];
  const hi0 = isNum(x1) ? x1 : pts.xs[n - 1];
  const span = hi0 - lo0;
  const scale = isNum(span) && span > 0 ? columns / span : 0;
  const colOf = (x) => Math.min(columns - 1, Math.max(0, Math.floor((x - lo0) * scale))) || 0;
  const outX = [];
  const outY = [];
  let start = 0;
  let lo = 0;
  let hi = 0;
  const flush = (end) => {
    const keep = [lo, hi];
    if (start === 0) keep.push(0);
    if (end === n) keep.push(n - 1);
    for (const k of [...new Set(keep)].sort((a, b) => a - b)) {
      outX.push(pts.xs[k]);
      outY.push(pts.ys[k]);
    }
  };
  let col = colOf(pts.xs[0]);
  for (let i = 1; i < n; i++) {
    const c = colOf(pts.xs[i]);
    if (c !== col) {
      flush(i);
      start = lo = hi = i;
      col = c;
      continue;
    }
    if (pts.ys[i] < pts.ys[lo]) lo = i;
    if (pts.ys[i] > pts.ys[hi]) hi = i;
  }
  flush(n);
  return { xs: outX, ys: outY };
}

/** Finite min and max of `values`; a constant series gets a small symmetric pad; null when nothing is finite. */
export function valueRange(values) {
  let min = Infinity;
  let max = -Infinity;
  for (const v of Array.isArray(values) ? values : []) {
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

/** Axis bounds widened to multiples of a nice step, and the tick values between them (at most 100). */
export function niceTicks(min, max, count = 4) {
  if (!isNum(min) || !isNum(max)) return { min: 0, max: 1, step: 1, ticks: [0, 1] };
  if (!isNum(max - min)) {
    const half = niceTicks(min / 2, max / 2, count); // the span overflows a double: work on halves
    return { min: half.min * 2, max: half.max * 2, step: half.step * 2, ticks: half.ticks.map((t) => t * 2) };
  }
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
  if (!span || !isNum(span)) return () => (r0 + r1) / 2;
  const k = (r1 - r0) / span;
  return (v) => r0 + (v - d0) * k;
}

/** Tick label: as many decimals as the tick step needs, none for integers; exponent form for huge/tiny. */
export function formatTick(value, step) {
  if (!isNum(value)) return "";
  if (value !== 0 && (Math.abs(value) >= 1e6 || (isNum(step) && step > 0 && step < 1e-4))) {
    return value.toExponential(1);
  }
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
 * Which series share a panel: in order, a series joins the previous panel (at most two per panel) when the
 * shared axis spans at most `ratio` times each one's own range, so neither line is flattened (e.g. `clip` and
 * `patch_clip` share, `augclip` ~0.3 and `lpips` ~0.5 with small changes do not). `ranges` maps a name to
 * `[min, max]` (or null). Returns arrays of names.
 */
export function groupSeries(names, ranges, ratio = 3) {
  const groups = [];
  let open = null;
  for (const name of names) {
    const r = ranges[name];
    if (open && open.names.length < 2 && r && open.range) {
      const lo = Math.min(r[0], open.range[0]);
      const hi = Math.max(r[1], open.range[1]);
      const union = hi - lo;
      const own = Math.min(r[1] - r[0], open.range[1] - open.range[0]);
      if (isNum(union) && own > 0 && union <= ratio * own) {
        open.names.push(name);
        open.range = [lo, hi];
        continue;
      }
    }
    open = { names: [name], range: r };
    groups.push(open);
  }
  return groups.map((g) => g.names);
}

/**
 * One horizontal panel per group, stacked (small multiples: each keeps its own y scale, as the papers plot
 * AugCLIP and LPIPS separately). Returns `[{x, y, w, h}]` plot rectangles inside `width`×`height` leaving `left`
 * for y labels, `top` per panel for its title and `bottom` for the shared x axis. A plot is never lower than
 * `minPlot`: panels that would not fit are left out (the caller says how many were).
 */
export function layoutPanels(count, width, height,
  { left = 44, right = 8, top = 16, bottom = 18, gap = 4, minPlot = MIN_PLOT_HEIGHT } = {}) {
  if (!(count > 0) || !isNum(width) || !isNum(height)) return [];
  const w = Math.max(1, width - left - right);
  const fits = Math.max(1, Math.floor((height - bottom + gap) / (top + minPlot + gap)));
  const shown = Math.min(Math.floor(count), fits);
  const each = Math.max(top + minPlot, (height - bottom - gap * (shown - 1)) / shown);
  const panels = [];
  for (let i = 0; i < shown; i++) {
    const y0 = i * (each + gap);
    panels.push({ x: left, y: y0 + top, w, h: each - top });
  }
  return panels;
}

/** Tick count for a plot of height `h`: a tick label every >= 22 px, 2 to 5 of them. */
export function tickCount(h) {
  return Math.max(2, Math.min(5, Math.floor(h / 22)));
}

/**
 * What the chart shows, as data: per panel its rectangle, axis, and lines (already downsampled), the caption
 * under the x axis and how many groups did not fit. `state` is a run state from `runState` (or null).
 */
export function chartModel(buffer, width, height, state = null) {
  const columns = new Map();
  for (const name of buffer.names) {
    const col = buffer.column(name);
    if (col.xs.length) columns.set(name, col);
  }
  const names = [...columns.keys()];
  const x0 = 0;
  const x1 = Math.max(isNum(buffer.total) ? buffer.total : 0, buffer.lastStep, 1);
  const model = { names, panels: [], hidden: 0, x0, x1, caption: "", state, boundaries: [] };
  if (!names.length) return model;
  const lines = new Map();
  const ranges = {};
  const plotW = Math.max(1, (isNum(width) ? width : 0) - 52);
  const seg = buffer.segment;
  for (const name of names) {
    const { xs, ys } = columns.get(name);
    const line = downsampleMinMax(xs, ys, plotW, x0, x1);
    // a segmented run is one line per run (cell), not one sawtooth: a new sub-path where the run changes
    line.starts = seg ? line.xs.flatMap((x, i) => (i && segmentOf(x, seg.size) !== segmentOf(line.xs[i - 1], seg.size) ? [i] : [])) : [];
    lines.set(name, line);
    ranges[name] = valueRange(line.ys);
  }
  model.boundaries = [];
  if (seg) {
    const count = Math.ceil(x1 / seg.size);
    if (count - 1 <= plotW / 4) for (let k = 1; k < count; k++) model.boundaries.push(k * seg.size);
  }
  const groups = groupSeries(names, ranges);
  const band = state?.text ? MARK_HEIGHT : 0; // the run-state mark gets its own line above the panels
  const rects = layoutPanels(groups.length, width, height - band).map((r) => ({ ...r, y: r.y + band }));
  model.hidden = groups.length - rects.length;
  model.panels = rects.map((rect, i) => {
    const group = groups[i];
    const lo = Math.min(...group.map((n) => ranges[n][0]));
    const hi = Math.max(...group.map((n) => ranges[n][1]));
    const axis = niceTicks(lo, hi, tickCount(rect.h));
    const series = group.map((name) => ({ name, line: lines.get(name), latest: buffer.latest(name) }));
    return { ...rect, axis, series };
  });
  const head = buffer.label ? `${buffer.label} · ` : "";
  model.caption = `${head}${describeProgress(buffer.lastStep, buffer.total, seg)}`;
  return model;
}

/**
 * The state a chart shows, from what is known about the node in the latest run of its workflow:
 * `running`, `waiting` (a run is on its way to the node: the series is the previous run's), `done`, `cached`
 * (the output is the cached one of an earlier run), `cancelled` / `error` (the
 * latest run stopped in this node: the series is partial), `stale` (the latest run stopped before this node
 * finished: the series is from an earlier run) or `idle` (nothing known). Returns `{kind, text}`; `text` is
 * the mark drawn on the chart ("" for running, done and idle).
 */
export function runState(kind, step = null, total = null, segment = null) {
  const where = segment ? describeProgress(step, total, segment).replace(" · step ", " at step ") : null;
  const at = isNum(step) && step > 0
    ? (where ? ` in ${where}` : ` at step ${step}${isNum(total) && total > 0 ? ` / ${total}` : ""}`) : "";
  switch (kind) {
    case "running":
      return { kind, text: "" };
    case "waiting":
      return { kind, text: "previous run: the current run has not reached this node yet" };
    case "done":
      return { kind, text: "" };
    case "cached":
      return { kind, text: "cached: series of the run that made the output" };
    case "cancelled":
      return { kind, text: `cancelled${at}` };
    case "error":
      return { kind, text: `failed${at}` };
    case "stale":
      return { kind, text: "stale: the latest run did not complete this node" };
    default:
      return { kind: "idle", text: "" };
  }
}
