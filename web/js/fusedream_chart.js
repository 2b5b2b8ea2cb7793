// FuseDream score chart: a small line chart of the objective (and any secondary series) on every optimizing
// node, drawn while it runs from `fusedream.progress` events and restored from the node's `ui` output.
// Display only: the nodes behave the same through the API with no browser.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  EVENT,
  SeriesBuffer,
  downsampleMinMax,
  formatTick,
  formatValue,
  layoutPanels,
  linearScale,
  niceTicks,
  seriesFromOutput,
  valueRange,
} from "./chart_core.js";

const WIDGET_NAME = "fusedream_chart";
const MIN_HEIGHT = 150;
const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#f06292", "#ba68c8", "#fff176"];
const BG = "#1b1b1b";
const GRID = "rgba(255,255,255,0.08)";
const TEXT = "#bbbbbb";
const FONT = "10px sans-serif";

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
  return Boolean(inputs.required?.keep_frames_every || inputs.optional?.keep_frames_every);
}

class ScoreChart {
  constructor(node) {
    this.node = node;
    this.buffer = new SeriesBuffer();
    this.outputSeen = undefined;
    this.frame = 0;
    this.root = document.createElement("div");
    this.root.className = "fusedream-chart";
    this.root.style.cssText = "width:100%;height:100%;position:relative;overflow:hidden;";
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "width:100%;height:100%;display:block;border-radius:4px;";
    this.root.appendChild(this.canvas);
    this.widget = node.addDOMWidget(WIDGET_NAME, "fusedream_chart", this.root, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => MIN_HEIGHT,
      getValue: () => "",
      setValue: () => {},
      onDraw: () => this.checkStoredOutput(),
    });
    this.widget.serialize = false;
    this.observer = typeof ResizeObserver === "function" ? new ResizeObserver(() => this.requestDraw()) : null;
    this.observer?.observe(this.root);
    charts.add(this);
    this.requestDraw();
  }

  /** The node starts executing: forget the previous run (its stored output stays as it was until replaced). */
  startRun() {
    this.buffer.reset();
    this.outputSeen = app.nodeOutputs?.[String(this.node.id)];
    this.requestDraw();
  }

  addEvent(detail) {
    this.buffer.addEvent(detail);
    this.requestDraw();
  }

  /** Load a finished run from a node output (`onExecuted`, or the stored outputs of a reopened run). */
  loadOutput(output) {
    const entry = seriesFromOutput(output);
    if (!entry) return;
    this.buffer.loadUi(entry);
    this.requestDraw();
  }

  /** Reopening a run from the history or switching workflow tabs replaces `app.nodeOutputs` without calling
   * onExecuted: pick the series up from there when it changes. */
  checkStoredOutput() {
    const stored = app.nodeOutputs?.[String(this.node.id)];
    if (stored === this.outputSeen) return;
    this.outputSeen = stored;
    if (stored) this.loadOutput(stored);
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
    const buf = this.buffer;
    const names = buf.names.filter((name) => buf.column(name).xs.length);
    this.root.dataset.points = String(buf.length);
    this.root.dataset.series = names.join(",");
    if (!names.length) {
      ctx.fillStyle = TEXT;
      ctx.textAlign = "center";
      ctx.fillText("score chart: appears when the node runs", cssW / 2, cssH / 2);
      return;
    }
    const x0 = 0;
    const x1 = Math.max(buf.total || 0, buf.lastStep, 1);
    const panels = layoutPanels(names.length, cssW, cssH);
    names.forEach((name, i) => this.drawPanel(ctx, panels[i], name, COLORS[i % COLORS.length], x0, x1));
    const bottom = panels[panels.length - 1];
    ctx.fillStyle = TEXT;
    ctx.textAlign = "right";
    const head = buf.label ? `${buf.label} · ` : "";
    ctx.fillText(`${head}step ${buf.lastStep} / ${buf.total || "?"}`, bottom.x + bottom.w, bottom.y + bottom.h + 9);
    ctx.textAlign = "left";
    ctx.fillText("0", bottom.x, bottom.y + bottom.h + 9);
  }

  drawPanel(ctx, p, name, color, x0, x1) {
    const { xs, ys } = this.buffer.column(name);
    const line = downsampleMinMax(xs, ys, p.w, x0, x1);
    const range = valueRange(line.ys);
    const axis = niceTicks(range[0], range[1], Math.max(2, Math.floor(p.h / 22)));
    const sx = linearScale(x0, x1, p.x, p.x + p.w);
    const sy = linearScale(axis.min, axis.max, p.y + p.h, p.y);
    ctx.strokeStyle = GRID;
    ctx.lineWidth = 1;
    ctx.fillStyle = TEXT;
    ctx.textAlign = "right";
    for (const t of axis.ticks) {
      const y = Math.round(sy(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(p.x, y);
      ctx.lineTo(p.x + p.w, y);
      ctx.stroke();
      ctx.fillText(formatTick(t, axis.step), p.x - 4, y);
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(p.x, p.y, p.w, p.h);
    ctx.clip();
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    line.xs.forEach((x, i) => (i ? ctx.lineTo(sx(x), sy(line.ys[i])) : ctx.moveTo(sx(x), sy(line.ys[i]))));
    ctx.stroke();
    const lx = sx(line.xs[line.xs.length - 1]);
    const ly = sy(line.ys[line.ys.length - 1]);
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(lx, ly, 2.5, 0, 2 * Math.PI);
    ctx.fill();
    ctx.restore();
    ctx.textAlign = "left";
    ctx.fillStyle = color;
    ctx.fillText(`${name}  ${formatValue(this.buffer.latest(name))}`, p.x, p.y - 7);
  }
}

function chartOf(node) {
  return node?.fusedreamChart ?? null;
}

/** Give `node` a chart (once) with its cleanup and output hooks on the instance. */
function attachChart(node) {
  if (chartOf(node)) return chartOf(node);
  const chart = new ScoreChart(node);
  node.fusedreamChart = chart;
  chain(node, "onExecuted", (output) => chart.loadOutput(output));
  chain(node, "onRemoved", () => {
    chart.destroy();
    node.fusedreamChart = null;
  });
  const size = node.computeSize?.();
  if (size && node.size && node.size[1] < size[1]) node.setSize([Math.max(node.size[0], size[0]), size[1]]);
  return chart;
}

/** The chart for a node id from the server; a node without one (any node that sends the series) gets one. */
function chartForId(id, create) {
  if (id === null || id === undefined) return null;
  const key = String(id);
  for (const chart of charts) if (String(chart.node.id) === key) return chart;
  if (!create) return null;
  const node = app.graph?.getNodeById?.(key) ?? app.graph?.getNodeById?.(Number(key));
  return node ? attachChart(node) : null;
}

app.registerExtension({
  name: "FuseDream.ScoreChart",

  async setup() {
    api.addEventListener(EVENT, ({ detail }) => {
      chartForId(detail?.node, true)?.addEvent(detail);
      app.graph?.setDirtyCanvas?.(true, false);
    });
    api.addEventListener("executing", ({ detail }) => {
      const id = detail && typeof detail === "object" ? detail.display_node ?? detail.node : detail;
      chartForId(id, false)?.startRun();
    });
    api.addEventListener("executed", ({ detail }) => {
      if (!seriesFromOutput(detail?.output)) return;
      const chart = chartForId(detail.display_node ?? detail.node, true);
      chart?.loadOutput(detail.output);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isMonitoredNodeDef(nodeData)) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      attachChart(this);
    });
  },
});
