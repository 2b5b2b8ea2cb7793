// What the page knows about recent runs, per prompt and per optimizing node: live from the websocket events
// and, after a reload, from the server's history. A chart asks `view(workflow, node, type)` for the series of
// its node in the latest run of the workflow open in its tab, and how to mark it (cancelled, stale, cached).
// Pure: no DOM, no ComfyUI; tested with `node --test tests/js/`.
import { SeriesBuffer, isNum, runState, seriesFromOutput } from "./chart_core.js";

/** Runs kept in the page (the oldest are forgotten). */
export const MAX_RUNS = 64;

const FINISHED = new Set(["success", "interrupted", "error"]);
const WITH_SERIES = new Set(["done", "cached"]);
const str = (v) => (typeof v === "string" || isNum(v) ? String(v) : null);

function bufferFrom(output) {
  const buffer = new SeriesBuffer();
  const entry = seriesFromOutput(output);
  if (entry) buffer.loadUi(entry);
  return entry ? buffer : null;
}

export class RunLog {
  constructor(maxRuns = MAX_RUNS) {
    this.maxRuns = maxRuns;
    this.runs = new Map();
    this.current = null;
    this.version = 0;
    this.counter = 0;
  }

  #run(promptId, create = true) {
    const id = str(promptId);
    if (id === null) return null;
    let run = this.runs.get(id);
    if (!run && create) {
      run = { id, order: 0, seq: ++this.counter, workflowId: null, classTypes: {}, status: "running",
              nodes: new Map() };
      this.runs.set(id, run);
      this.#trim(id);
    }
    return run ?? null;
  }

  /** Forget the oldest runs beyond `maxRuns` (never `keep`, the run just created). */
  #trim(keep = null) {
    if (this.runs.size <= this.maxRuns) return;
    const oldest = [...this.runs.values()].filter((run) => run.id !== keep)
      .sort((a, b) => a.order - b.order || a.seq - b.seq);
    for (const run of oldest.slice(0, this.runs.size - this.maxRuns)) this.runs.delete(run.id);
  }

  #node(run, nodeId) {
    const id = str(nodeId);
    if (!run || id === null) return null;
    let nr = run.nodes.get(id);
    if (!nr) {
      nr = { state: "pending", buffer: new SeriesBuffer() };
      run.nodes.set(id, nr);
    }
    return nr;
  }

  #changed() {
    this.version += 1;
  }

  /** `execution_start`: a prompt begins (timestamp in ms from the server orders runs). */
  start(promptId, timestamp) {
    const run = this.#run(promptId);
    if (!run) return;
    run.status = "running";
    run.order = isNum(timestamp) ? timestamp : Date.now();
    this.current = run.id;
    this.#changed();
  }

  /** The prompt's workflow id (`extra_pnginfo.workflow.id`) and node types, from `/queue` or the history. */
  describe(promptId, workflowId, promptGraph) {
    const run = this.#run(promptId);
    if (!run) return;
    if (typeof workflowId === "string") run.workflowId = workflowId;
    if (promptGraph && typeof promptGraph === "object") {
      for (const [id, node] of Object.entries(promptGraph)) {
        if (node && typeof node.class_type === "string") run.classTypes[id] = node.class_type;
      }
    }
    this.#changed();
  }

  /** `execution_cached`: these nodes will not run; their stored output (sent as `executed`) is an older run's. */
  cached(promptId, nodeIds) {
    const run = this.#run(promptId);
    if (!run || !Array.isArray(nodeIds)) return;
    for (const id of nodeIds) {
      const nr = this.#node(run, id);
      if (nr) nr.state = "cached";
    }
    this.#changed();
  }

  /** `executing`: a node of the current prompt starts; its series starts over. */
  executing(nodeId) {
    const run = this.#run(this.current, false);
    if (!run || run.status !== "running" || str(nodeId) === null) return;
    const nr = this.#node(run, nodeId);
    if (nr.state === "cached") return;
    nr.state = "running";
    nr.buffer = new SeriesBuffer();
    this.#changed();
  }

  /** A `fusedream.progress` event of the current prompt (a page opened mid-run gets a run of its own). */
  progress(detail) {
    if (!detail || typeof detail !== "object" || str(detail.node) === null) return;
    let run = this.#run(this.current, false);
    if (!run || run.status !== "running") {
      this.start(`live-${this.counter + 1}`);
      run = this.#run(this.current, false);
    }
    const nr = this.#node(run, detail.node);
    if (nr.state === "pending" || nr.state === "cached") nr.state = "running";
    nr.buffer.addEvent(detail);
    this.#changed();
  }

  /** `executed`: a node finished (or was cached); its output carries the whole run's series. */
  executed(promptId, nodeId, output) {
    const run = this.#run(promptId ?? this.current);
    const buffer = bufferFrom(output);
    if (!run || !buffer) return;
    const nr = this.#node(run, nodeId);
    if (!nr) return;
    nr.state = nr.state === "cached" ? "cached" : "done";
    nr.buffer = buffer;
    this.#changed();
  }

  /** The prompt ended: `success`, `interrupted` (in `nodeId`) or `error` (in `nodeId`). */
  finished(promptId, status, nodeId = null) {
    const run = this.#run(promptId ?? this.current, false);
    if (!run || !FINISHED.has(status)) return;
    run.status = status;
    const stop = status === "interrupted" ? "cancelled" : "error";
    for (const [id, nr] of run.nodes) {
      if (nr.state === "running" || (id === str(nodeId) && nr.state === "pending")) nr.state = stop;
    }
    if (str(nodeId) !== null && status !== "success") {
      const nr = this.#node(run, nodeId);
      if (!WITH_SERIES.has(nr.state)) nr.state = stop;
    }
    if (this.current === run.id) this.current = null;
    this.#changed();
  }

  /** Runs from the server's `/history` (an object keyed by prompt id); runs already known are kept as they are. */
  loadHistory(history) {
    if (!history || typeof history !== "object") return;
    for (const [promptId, item] of Object.entries(history)) {
      if (this.runs.has(promptId) || !item || typeof item !== "object") continue;
      const prompt = Array.isArray(item.prompt) ? item.prompt : [];
      const messages = Array.isArray(item.status?.messages) ? item.status.messages : [];
      const run = this.#run(promptId);
      const workflow = prompt[3]?.extra_pnginfo?.workflow;
      this.describe(promptId, typeof workflow?.id === "string" ? workflow.id : null, prompt[2]);
      run.order = isNum(prompt[0]) ? prompt[0] : 0;
      let cached = [];
      let status = item.status?.status_str === "error" ? "error" : "success";
      let stopNode = null;
      for (const message of messages) {
        if (!Array.isArray(message)) continue;
        const [event, data] = message;
        if (event === "execution_start" && isNum(data?.timestamp)) run.order = data.timestamp;
        if (event === "execution_cached" && Array.isArray(data?.nodes)) cached = data.nodes.map(String);
        if (event === "execution_interrupted" || event === "execution_error") {
          status = event === "execution_interrupted" ? "interrupted" : "error";
          stopNode = str(data?.node_id);
        }
      }
      for (const [nodeId, output] of Object.entries(item.outputs || {})) {
        const buffer = bufferFrom(output);
        if (!buffer) continue;
        run.nodes.set(nodeId, { state: cached.includes(nodeId) ? "cached" : "done", buffer });
      }
      run.status = status;
      if (stopNode !== null && status !== "success" && !run.nodes.has(stopNode)) {
        const state = status === "interrupted" ? "cancelled" : "error";
        run.nodes.set(stopNode, { state, buffer: new SeriesBuffer() });
      }
    }
    this.#trim();
    this.#changed();
  }

  /** Runs of `workflowId` that hold node `nodeId` of type `classType`, newest first. A run whose workflow is
   * not known yet (its `/queue` entry not read) counts for any workflow, as does one without node types. */
  #runsOf(workflowId, nodeId, classType) {
    return [...this.runs.values()]
      .filter((run) => run.workflowId === null || run.workflowId === workflowId)
      .filter((run) => {
        const type = run.classTypes[nodeId];
        return type === undefined ? run.nodes.has(nodeId) : type === classType;
      })
      .sort((a, b) => b.order - a.order || b.seq - a.seq);
  }

  /**
   * What the chart of node `nodeId` (type `classType`) in the tab showing workflow `workflowId` draws:
   * `{buffer, state, promptId}`, `state` from `runState`. The latest run of the workflow decides: the node's
   * own series if it ran, was cached or was stopped in it; otherwise the last earlier series, marked stale when
   * the latest run ended without reaching the node.
   */
  view(workflowId, nodeId, classType) {
    const id = str(nodeId);
    const runs = id === null ? [] : this.#runsOf(workflowId ?? null, id, classType);
    const empty = { buffer: new SeriesBuffer(), state: runState("idle"), promptId: null };
    if (!runs.length) return empty;
    const [latest, ...older] = runs;
    const nr = latest.nodes.get(id);
    const earlier = () => {
      for (const run of older) {
        const prev = run.nodes.get(id);
        if (prev && WITH_SERIES.has(prev.state) && prev.buffer.length) return { run, nr: prev };
      }
      return null;
    };
    if (nr && nr.state === "cached" && !nr.buffer.length) {
      // ComfyUI resends `executed` only for cached output nodes: the series is the producing run's.
      const prev = earlier();
      return { buffer: prev ? prev.nr.buffer : new SeriesBuffer(), state: runState("cached"), promptId: latest.id };
    }
    if (nr && (WITH_SERIES.has(nr.state) || nr.state === "running")) {
      return { buffer: nr.buffer, state: runState(nr.state), promptId: latest.id };
    }
    if (nr && (nr.state === "cancelled" || nr.state === "error")) {
      if (nr.buffer.length) {
        const state = runState(nr.state, nr.buffer.lastStep, nr.buffer.total);
        return { buffer: nr.buffer, state, promptId: latest.id };
      }
      const prev = earlier();
      return { buffer: prev ? prev.nr.buffer : new SeriesBuffer(), state: runState("stale"), promptId: latest.id };
    }
    const prev = earlier();
    if (latest.status === "running" || latest.status === "success") {
      return prev ? { buffer: prev.nr.buffer, state: runState(prev.nr.state), promptId: prev.run.id } : empty;
    }
    return { buffer: prev ? prev.nr.buffer : new SeriesBuffer(), state: runState("stale"), promptId: latest.id };
  }
}
