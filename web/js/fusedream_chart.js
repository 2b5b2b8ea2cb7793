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
const PREVIEW_RESERVE = 230;
const MIN_NODE_WIDTH = 340;
/** Optimizing node types without the monitor's `keep_frames_every` widget (they send events all the same). */
const MONITORED_TYPES = new Set(["FuseDreamTopK"]);
const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#f06292", "#ba68c8", "#fff176"];
const BG = "#1b1b1b";
const GRID = "rgba(255,255,255,0.10)";
const TEXT = "#c8c8c8";
const MARK = { cancelled: "#ffb74d", error: "#ef5350", stale: "#ffb74d", cached: "#90a4ae" };
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
  const hasPreview = node.widgets?.some((w) => w.name === PREVIEW_WIDGET);
  const w = Math.max(node.size[0], min[0], MIN_NODE_WIDTH);
  const h = Math.max(node.size[1], min[1] + (hasPreview ? 0 : PREVIEW_RESERVE));
  if (w !== node.size[0] || h !== node.size[1]) node.setSize([w, h]);
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
      this.drawPanel(ctx, panel, model.x0, model.x1, color);
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

  drawPanel(ctx, p, x0, x1, firstColor) {
    const sx = linearScale(x0, x1, p.x, p.x + p.w);
    const sy = linearScale(p.axis.min, p.axis.max, p.y + p.h, p.y);
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
      line.xs.forEach((x, i) => (i ? ctx.lineTo(sx(x), sy(line.ys[i])) : ctx.moveTo(sx(x), sy(line.ys[i]))));
      ctx.stroke();
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.arc(sx(line.xs[line.xs.length - 1]), sy(line.ys[line.ys.length - 1]), 2.5, 0, 2 * Math.PI);
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
  chain(node, "onRemoved", () => {
    chart.destroy();
    node.fusedreamChart = null;
  });
  return chart;
}

/** The node of the current graph with this id; one without a chart (a node of another pack that sends the
 * series) gets one on its first event, at its current size. */
function attachToId(id) {
  if (id === null || id === undefined) return;
  const key = String(id);
  for (const chart of charts) if (String(chart.node.id) === key) return;
  const node = app.graph?.getNodeById?.(key) ?? app.graph?.getNodeById?.(Number(key));
  if (node) attachChart(node);
}

function redrawAll() {
  for (const chart of charts) chart.requestDraw();
  app.graph?.setDirtyCanvas?.(true, false);
}

/** The running prompt's workflow id and node types, from `/queue` (it may have been queued from any tab). */
async function describeRunning(promptId) {
  try {
    const res = await api.fetchApi("/queue", { cache: "no-store" });
    const queue = await res.json();
    for (const item of [...(queue?.queue_running ?? []), ...(queue?.queue_pending ?? [])]) {
      if (Array.isArray(item) && item[1] === promptId) {
        log.describe(promptId, item[3]?.extra_pnginfo?.workflow?.id ?? null, item[2]);
        redrawAll();
      }
    }
  } catch (err) {
    console.warn("[FuseDream] could not read the queue for the chart:", err);
  }
}

async function loadHistory() {
  try {
    const res = await api.fetchApi(`/history?max_items=${MAX_RUNS}`, { cache: "no-store" });
    log.loadHistory(await res.json());
    redrawAll();
  } catch (err) {
    console.warn("[FuseDream] could not read the history for the charts:", err);
  }
}

app.registerExtension({
  name: "FuseDream.ScoreChart",

  async setup() {
    const on = (type, fn) => api.addEventListener(type, ({ detail }) => {
      fn(detail);
      redrawAll();
    });
    on("execution_start", (d) => {
      log.start(d?.prompt_id, d?.timestamp);
      if (d?.prompt_id) describeRunning(d.prompt_id);
    });
    on("execution_cached", (d) => log.cached(d?.prompt_id, d?.nodes));
    on("executing", (d) => log.executing(d && typeof d === "object" ? d.display_node ?? d.node : d));
    on(EVENT, (d) => {
      log.progress(d);
      attachToId(d?.node);
    });
    on("executed", (d) => log.executed(d?.prompt_id, d?.display_node ?? d?.node, d?.output));
    on("execution_success", (d) => log.finished(d?.prompt_id, "success"));
    on("execution_interrupted", (d) => log.finished(d?.prompt_id, "interrupted", d?.node_id));
    on("execution_error", (d) => log.finished(d?.prompt_id, "error", d?.node_id));
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
