// FuseDream score chart: a small line chart of the objective (and any secondary series) on every optimizing
// node, drawn while it runs from `fusedream.progress` events, and afterwards from what the page knows about the
// latest run of the workflow open in the tab (`RunLog`: live events, then the server's history after a reload).
// Display only: the nodes behave the same through the API with no browser.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { CHART_HEIGHT, EVENT, MARK_HEIGHT, chartModel, formatTick, formatValue, linearScale } from "./chart_core.js";
import { MAX_RUNS, RunLog } from "./run_log.js";

const WIDGET_NAME = "fusedream_chart";
/** ComfyUI's image preview widget (frontend 1.2x): added on a node's first preview with a 220 px minimum. */
const PREVIEW_WIDGET = "$$canvas-image-preview";
const PREVIEW_MIN_HEIGHT = 220;
const PREVIEW_RESERVE = 230;
/** Holds the preview's place until the first preview arrives, with the preview widget's own layout request, so the
 * node's other widgets (the chart, a prompt box) keep their heights when it arrives. */
const PREVIEW_SPACE = "fusedream_preview_space";
const SERIES_ROUTE = "/fusedream/series/";
const MIN_NODE_WIDTH = 340;
/** Optimizing node types without the monitor's `keep_frames_every` widget (they send events all the same). */
const MONITORED_TYPES = new Set(["FuseDreamTopK"]);
const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#f06292", "#ba68c8", "#fff176"];
const BG = "#1b1b1b";
const GRID = "rgba(255,255,255,0.10)";
const BOUNDARY = "rgba(255,255,255,0.28)";
const TEXT = "#c8c8c8";
const MARK = { cancelled: "#ffb74d", error: "#ef5350", stale: "#ffb74d", cached: "#90a4ae", waiting: "#90a4ae" };
const FONT = "12px sans-serif";
const TITLE_FONT = "bold 12px sans-serif";

const log = new RunLog();
/** Every chart on the canvas; looked up by the node's id when an event arrives (node ids can change on paste). */
const charts = new Set();

function chain(target, name, fn) {
  const previous = target[name];
  target[name] = function (...args) {
    const result = previous?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}

/** Nodes that run a NodeMonitor take its `keep_frames_every` widget: those get a chart from creation on. */
function isMonitoredNodeDef(nodeData) {
  const inputs = nodeData?.input || {};
  const monitorInput = inputs.required?.keep_frames_every || inputs.optional?.keep_frames_every;
  return MONITORED_TYPES.has(nodeData?.name) || Boolean(monitorInput);
}

/** The node's final size from the start: its widgets, the chart, and room for the preview ComfyUI adds on the
 * first preview image, so nothing makes it grow during a run. A larger size (a user's, a saved one) is kept. */
function reserveSize(node) {
  const min = node.computeSize?.();
  if (!min || !node.size) return;
  const hasPreview = node.widgets?.some((w) => w.name === PREVIEW_WIDGET || w.name === PREVIEW_SPACE);
  const w = Math.max(node.size[0], min[0], MIN_NODE_WIDTH);
  const h = Math.max(node.size[1], min[1] + (hasPreview ? 0 : PREVIEW_RESERVE));
  if (w !== node.size[0] || h !== node.size[1]) node.setSize([w, h]);
}

/** A widget that draws a placeholder where the live preview will be and asks for the preview widget's layout. */
function previewSpace() {
  return {
    name: PREVIEW_SPACE,
    type: "fusedream_preview_space",
    value: "",
    serialize: false,
    options: { serialize: false },
    y: 0,
    computeLayoutSize: () => ({ minHeight: PREVIEW_MIN_HEIGHT, minWidth: 1 }),
    draw(ctx, node, width, y, height) {
      const h = this.computedHeight ?? height ?? PREVIEW_MIN_HEIGHT;
      ctx.save();
      ctx.strokeStyle = "rgba(255,255,255,0.12)";
      ctx.setLineDash([4, 4]);
      ctx.strokeRect(15, y + 4, width - 30, h - 8);
      ctx.fillStyle = "rgba(255,255,255,0.35)";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.font = "12px sans-serif";
      ctx.fillText("live preview (when the node sends one)", width / 2, y + h / 2);
      ctx.restore();
    },
  };
}

/** The preview's place is held by the spacer exactly while ComfyUI's preview widget is absent (and the spacer is
 * the last widget, where the preview widget is added). Run before every layout (the node's onDrawBackground, where
 * ComfyUI adds the preview widget). */
function syncPreviewSpace(node) {
  const widgets = node.widgets ?? [];
  const hasPreview = widgets.some((w) => w.name === PREVIEW_WIDGET);
  const at = widgets.findIndex((w) => w.name === PREVIEW_SPACE);
  if (hasPreview && at >= 0) widgets.splice(at, 1);
  if (!hasPreview && at < 0 && !node.flags?.collapsed) node.addCustomWidget(previewSpace());
  if (!hasPreview && at >= 0 && at !== widgets.length - 1) widgets.push(...widgets.splice(at, 1));
}

class ScoreChart {
  constructor(node) {
    this.node = node;
    this.frame = 0;
    this.seen = "";
    this.root = document.createElement("div");
    this.root.className = "fusedream-chart";
    this.root.style.cssText = "width:100%;height:100%;position:relative;overflow:hidden;";
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "width:100%;height:100%;display:block;border-radius:4px;";
    this.root.appendChild(this.canvas);
    this.widget = node.addDOMWidget(WIDGET_NAME, "fusedream_chart", this.root, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => CHART_HEIGHT,
      getValue: () => "",
      setValue: () => {},
      onDraw: () => this.checkView(),
    });
    this.widget.serialize = false;
    this.observer = typeof ResizeObserver === "function" ? new ResizeObserver(() => this.requestDraw()) : null;
    this.observer?.observe(this.root);
    charts.add(this);
    this.requestDraw();
  }

  /** What to draw: the node's series in the latest run of the workflow in this tab (see RunLog.view). */
  view() {
    return log.view(app.graph?.id ?? null, String(this.node.id), this.node.comfyClass ?? this.node.type);
  }

  /** Called on every canvas frame: redraw when the run log, the node's id or the tab's workflow changed. */
  checkView() {
    const key = `${log.version}|${app.graph?.id}|${this.node.id}`;
    if (key === this.seen) return;
    this.seen = key;
    this.requestDraw();
  }

  requestDraw() {
    if (this.frame) return;
    const run = () => {
      this.frame = 0;
      this.draw();
    };
    this.frame = typeof requestAnimationFrame === "function" ? requestAnimationFrame(run) : setTimeout(run, 16);
  }

  destroy() {
    this.observer?.disconnect();
    charts.delete(this);
  }

  draw() {
    const { buffer, state, promptId } = this.view();
    const data = this.root.dataset;
    data.points = String(buffer.length);
    data.first = String(buffer.steps[0] ?? 0);
    data.step = String(buffer.lastStep);
    data.total = String(buffer.total || 0);
    data.state = state.kind;
    data.mark = state.text;
    data.prompt = promptId ?? "";
    const cssW = this.canvas.clientWidth;
    const cssH = this.canvas.clientHeight;
    if (!cssW || !cssH) return; // collapsed or hidden: redrawn by the ResizeObserver when shown again
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(cssW * dpr) || this.canvas.height !== Math.round(cssH * dpr)) {
      this.canvas.width = Math.round(cssW * dpr);
      this.canvas.height = Math.round(cssH * dpr);
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = BG;
    ctx.fillRect(0, 0, cssW, cssH);
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    const model = chartModel(buffer, cssW, cssH, state);
    data.series = model.names.join(",");
    data.caption = model.caption;
    data.boundaries = String(model.boundaries.length);
    data.panels = String(model.panels.length);
    data.panelHeights = model.panels.map((p) => Math.round(p.h)).join(",");
    if (!model.panels.length) {
      ctx.fillStyle = state.text ? MARK[state.kind] ?? TEXT : TEXT;
      ctx.textAlign = "center";
      ctx.fillText(state.text || "score chart: appears when the node runs", cssW / 2, cssH / 2);
      return;
    }
    let color = 0;
    for (const panel of model.panels) {
      this.drawPanel(ctx, panel, model.x0, model.x1, color, model.boundaries);
      color += panel.series.length;
    }
    const bottom = model.panels[model.panels.length - 1];
    const axisY = bottom.y + bottom.h + 10;
    ctx.fillStyle = TEXT;
    ctx.textAlign = "left";
    ctx.fillText("0", bottom.x, axisY);
    ctx.textAlign = "right";
    const hidden = model.hidden ? ` · +${model.hidden} panel(s)` : "";
    ctx.fillText(`${model.caption}${hidden}`, bottom.x + bottom.w, axisY);
    if (state.text) this.drawMark(ctx, state, cssW);
  }

  drawMark(ctx, state, width) {
    ctx.font = TITLE_FONT;
    ctx.fillStyle = MARK[state.kind] ?? TEXT;
    ctx.textAlign = "left";
    ctx.fillText(state.text, 6, MARK_HEIGHT / 2 + 1, width - 12);
    ctx.font = FONT;
  }

  drawPanel(ctx, p, x0, x1, firstColor, boundaries = []) {
    const sx = linearScale(x0, x1, p.x, p.x + p.w);
    const sy = linearScale(p.axis.min, p.axis.max, p.y + p.h, p.y);
    ctx.strokeStyle = BOUNDARY;
    ctx.lineWidth = 1;
    for (const b of boundaries) { // where one run (a grid cell) ends and the next starts
      const x = Math.round(sx(b)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, p.y);
      ctx.lineTo(x, p.y + p.h);
      ctx.stroke();
    }
    ctx.strokeStyle = GRID;
    ctx.lineWidth = 1;
    ctx.fillStyle = TEXT;
    ctx.textAlign = "right";
    for (const t of p.axis.ticks) {
      const y = Math.round(sy(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(p.x, y);
      ctx.lineTo(p.x + p.w, y);
      ctx.stroke();
      ctx.fillText(formatTick(t, p.axis.step), p.x - 4, y);
    }
    let titleX = p.x;
    p.series.forEach(({ name, line, latest }, k) => {
      const color = COLORS[(firstColor + k) % COLORS.length];
      ctx.save();
      ctx.beginPath();
      ctx.rect(p.x, p.y, p.w, p.h);
      ctx.clip();
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      const starts = new Set(line.starts ?? []);
      line.xs.forEach((x, i) => (i && !starts.has(i) ? ctx.lineTo(sx(x), sy(line.ys[i])) : ctx.moveTo(sx(x), sy(line.ys[i]))));
      ctx.stroke();
      if (line.xs.length === 1) { // one point (a top-k run of one chunk): its level across the plot, not a lone dot
        ctx.setLineDash([4, 3]);
        ctx.beginPath();
        ctx.moveTo(p.x, sy(line.ys[0]));
        ctx.lineTo(p.x + p.w, sy(line.ys[0]));
        ctx.stroke();
        ctx.setLineDash([]);
      }
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.arc(sx(line.xs[line.xs.length - 1]), sy(line.ys[line.ys.length - 1]), line.xs.length === 1 ? 4 : 2.5, 0, 2 * Math.PI);
      ctx.fill();
      ctx.restore();
      ctx.font = TITLE_FONT;
      ctx.textAlign = "left";
      ctx.fillStyle = color;
      const title = `${name} ${formatValue(latest)}`;
      ctx.fillText(title, titleX, p.y - 8);
      titleX += ctx.measureText(title).width + 14;
      ctx.font = FONT;
    });
  }
}

function chartOf(node) {
  return node?.fusedreamChart ?? null;
}

/** Give `node` a chart (once) with its cleanup hook on the instance. */
function attachChart(node) {
  if (chartOf(node)) return chartOf(node);
  const chart = new ScoreChart(node);
  node.fusedreamChart = chart;
  syncPreviewSpace(node);
  const drawBackground = node.onDrawBackground; // ComfyUI's (on the prototype): adds the preview widget
  node.onDrawBackground = function (...args) {
    previews.restore(this);
    const result = drawBackground?.apply(this, args);
    syncPreviewSpace(this);
    return result;
  };
  chain(node, "onRemoved", () => {
    chart.destroy();
    node.fusedreamChart = null;
  });
  return chart;
}

function redrawAll() {
  for (const chart of charts) chart.requestDraw();
  app.graph?.setDirtyCanvas?.(true, false);
}

async function getJson(path) {
  const res = await api.fetchApi(path, { cache: "no-store" });
  return res.ok ? res.json() : null;
}

/** The running or queued prompt's workflow id and node types, from `/queue` (it may have been queued from any
 * tab or another window). Returns the ids of the prompts running. */
async function describeQueue() {
  const running = [];
  try {
    const queue = await getJson("/queue");
    for (const item of [...(queue?.queue_running ?? []), ...(queue?.queue_pending ?? [])]) {
      if (!Array.isArray(item) || typeof item[1] !== "string") continue;
      log.describe(item[1], item[3]?.extra_pnginfo?.workflow?.id ?? null, item[2]);
    }
    for (const item of queue?.queue_running ?? []) if (Array.isArray(item)) running.push(item[1]);
  } catch (err) {
    console.warn("[FuseDream] could not read the queue for the chart:", err);
  }
  redrawAll();
  return running;
}

/** The series the server kept for `promptId` (the points a reloaded page missed, a cancelled node's series). */
async function restoreSeries(promptId) {
  try {
    const kept = await getJson(SERIES_ROUTE + encodeURIComponent(promptId));
    if (kept) log.restore(promptId, kept);
  } catch (err) {
    console.warn("[FuseDream] could not read the kept series for the chart:", err);
  }
  redrawAll();
}

/** When a prompt ends: its history entry (the complete series of every node that finished) and the server's series
 * of the node it stopped in, so a run the page saw only in part ends drawn whole. */
async function completeRun(promptId) {
  if (typeof promptId !== "string") return;
  try {
    // the server writes the history entry just after the last event: ask again until it is there
    for (const pause of [0, 250, 500, 1000, 2000, 4000]) {
      if (pause) await new Promise((resolve) => setTimeout(resolve, pause));
      const item = await getJson(`/history/${encodeURIComponent(promptId)}`);
      if (item?.[promptId]) {
        log.loadHistory(item);
        break;
      }
    }
  } catch (err) {
    console.warn("[FuseDream] could not read the history for the chart:", err);
  }
  if (log.needsRestore().includes(promptId)) await restoreSeries(promptId);
  redrawAll();
}

async function loadHistory() {
  try {
    log.loadHistory(await getJson(`/history?max_items=${MAX_RUNS}`));
  } catch (err) {
    console.warn("[FuseDream] could not read the history for the charts:", err);
  }
  const running = await describeQueue();
  for (const id of running) log.seen(id);
  await Promise.all(log.needsRestore().map(restoreSeries));
  redrawAll();
}

/** A prompt first seen in an event (the page was loaded while it ran): ask what it is and what was missed. */
function onSeen(promptId) {
  if (!log.seen(promptId)) return;
  describeQueue().then(() => restoreSeries(promptId));
}

/**
 * Live previews, routed like the charts: ComfyUI puts a preview on the node with the running node's id in the graph
 * shown, whatever workflow queued the prompt. A preview of another workflow's run is taken off the shown graph, and
 * the last preview of each node of each workflow is kept (as its own blob) and put back when its tab is shown again.
 */
class PreviewKeeper {
  constructor() {
    this.kept = new Map(); // `${workflow}|${node}` -> blob URL
  }

  received({ blob, displayNodeId, promptId }) {
    if (!(blob instanceof Blob) || displayNodeId == null) return;
    const workflow = log.workflowOf(promptId);
    const shown = app.graph?.id ?? null;
    if (workflow !== null && workflow !== shown) delete app.nodePreviewImages?.[String(displayNodeId)];
    if (workflow === null) return;
    const key = `${workflow}|${displayNodeId}`;
    const old = this.kept.get(key);
    if (old) URL.revokeObjectURL(old);
    this.kept.set(key, URL.createObjectURL(blob));
  }

  /** Put the kept preview back on `node` when the shown graph has none for it. */
  restore(node) {
    const images = app.nodePreviewImages;
    const id = String(node.id);
    if (!images || images[id]?.length || node.imgs?.length || app.nodeOutputs?.[id]?.images?.length) return;
    const url = this.kept.get(`${app.graph?.id}|${id}`);
    if (url) images[id] = [url];
  }
}

const previews = new PreviewKeeper();

/** The prompt id the server gives a prompt queued from this page, with its workflow id, as soon as it is queued. */
function recordQueued() {
  const queuePrompt = api.queuePrompt;
  if (typeof queuePrompt !== "function") return;
  api.queuePrompt = async function (number, data, ...rest) {
    const res = await queuePrompt.call(this, number, data, ...rest);
    if (typeof res?.prompt_id === "string") {
      log.describe(res.prompt_id, data?.workflow?.id ?? null, data?.output);
      redrawAll();
    }
    return res;
  };
}

app.registerExtension({
  name: "FuseDream.ScoreChart",

  async setup() {
    const on = (type, fn) => api.addEventListener(type, ({ detail }) => {
      fn(detail);
      redrawAll();
    });
    recordQueued();
    on("execution_start", (d) => {
      log.start(d?.prompt_id, d?.timestamp);
      if (d?.prompt_id && log.workflowOf(d.prompt_id) === null) describeQueue();
    });
    on("execution_cached", (d) => log.cached(d?.prompt_id, d?.nodes));
    on("executing", (d) => log.executing(d && typeof d === "object" ? d.display_node ?? d.node : d));
    on("progress", (d) => onSeen(d?.prompt_id));
    on(EVENT, (d) => {
      onSeen(d?.prompt_id);
      log.progress(d);
    });
    on("executed", (d) => log.executed(d?.prompt_id, d?.display_node ?? d?.node, d?.output));
    for (const [type, status] of [["execution_success", "success"], ["execution_interrupted", "interrupted"],
      ["execution_error", "error"]]) {
      on(type, (d) => {
        log.finished(d?.prompt_id, status, d?.node_id);
        completeRun(d?.prompt_id);
      });
    }
    api.addEventListener("b_preview_with_metadata", ({ detail }) => previews.received(detail ?? {}));
    await loadHistory();
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isMonitoredNodeDef(nodeData)) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      attachChart(this);
      reserveSize(this);
    });
    chain(nodeType.prototype, "onConfigure", function () {
      reserveSize(this);
    });
  },
});
