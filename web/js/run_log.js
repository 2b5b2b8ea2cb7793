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

  /** The workflow that queued `promptId`, or null while not known. */
  workflowOf(promptId) {
    return this.#run(promptId, false)?.workflowId ?? null;
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

  /**
   * A prompt seen running (an event that names it): a page loaded mid-run learns of it here. Returns true when the
   * run was not known, so the caller can ask the server what it missed (its workflow, the series so far).
   */
  seen(promptId) {
    const id = str(promptId);
    if (id === null) return false;
    const known = this.runs.has(id);
    const run = this.#run(id);
    if (!run.order) { // new, or only described (queued) so far: it is running now, after every finished run
      run.order = Date.now();
      this.#changed();
    }
    if (run.status === "running") this.current = id;
    return !known;
  }

  /** A `fusedream.progress` event: it belongs to the prompt it names (`prompt_id`), else to the current one. */
  progress(detail) {
    if (!detail || typeof detail !== "object" || str(detail.node) === null) return;
    if (str(detail.prompt_id) !== null) this.seen(detail.prompt_id);
    const run = this.#run(str(detail.prompt_id) ?? this.current, false);
    if (!run || run.status !== "running") return; // an event of no known running prompt: nowhere to draw it
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

  /**
   * Runs from the server's `/history` (an object keyed by prompt id). The history is what the server recorded, so
   * it also completes a run the page saw only in part (loaded mid-run): its order, workflow, status and the series
   * of every node that finished replace what the page had. Its stopped node keeps the partial series the page has
   * (the history has none; `restore` brings the server's).
   */
  loadHistory(history) {
    if (!history || typeof history !== "object") return;
    for (const [promptId, item] of Object.entries(history)) {
      if (!item || typeof item !== "object") continue;
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
      if (this.current === run.id) this.current = null;
      const stop = status === "interrupted" ? "cancelled" : "error";
      for (const nr of run.nodes.values()) if (nr.state === "running" || nr.state === "pending") nr.state = stop;
      if (stopNode !== null && status !== "success") {
        const nr = this.#node(run, stopNode);
        if (!WITH_SERIES.has(nr.state)) nr.state = stop;
      }
    }
    this.#trim();
    this.#changed();
  }

  /**
   * The series the server kept for a prompt (`GET /fusedream/series/{prompt_id}`: `{node: {entry, complete}}`):
   * a node's series from its first step, where the page saw only the end (it was reloaded mid-run) or nothing
   * (the node was cancelled: the history has no output for it). A live series that already starts where the
   * server's does is kept (it has more points). A node not known yet gets the state its run implies.
   */
  restore(promptId, nodes) {
    const run = this.#run(promptId, false);
    if (!run || !nodes || typeof nodes !== "object") return;
    for (const [nodeId, kept] of Object.entries(nodes)) {
      if (!kept || typeof kept !== "object") continue;
      const server = new SeriesBuffer();
      server.loadUi(kept.entry);
      if (!server.length) continue;
      const nr = this.#node(run, nodeId);
      if (!nr || WITH_SERIES.has(nr.state) && nr.buffer.length) continue; // finished: its own full series
      const live = nr.buffer;
      if (live.length && live.steps[0] <= server.steps[0] && live.lastStep >= server.lastStep) continue;
      nr.buffer = server.extendedWith(live.length ? live : null);
      if (nr.state === "pending") {
        const stop = run.status === "interrupted" ? "cancelled" : run.status === "error" ? "error" : "running";
        nr.state = kept.complete === true ? "done" : stop;
      }
    }
    this.#changed();
  }

  /** Prompts whose stopped or running node the server may hold a series of that the page lacks. */
  needsRestore() {
    const ids = [];
    for (const run of this.runs.values()) {
      const partial = [...run.nodes.values()].some((nr) => ["cancelled", "error", "running"].includes(nr.state));
      if (run.status === "running" || partial) ids.push(run.id);
    }
    return ids;
  }

  /** Runs queued from workflow `workflowId` that hold node `nodeId` of type `classType`, newest first. A run
   * whose workflow is not known (yet) is drawn nowhere: every event goes to the workflow that queued it. */
  #runsOf(workflowId, nodeId, classType) {
    if (workflowId === null) return [];
    return [...this.runs.values()]
      .filter((run) => run.workflowId === workflowId)
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
        const state = runState(nr.state, nr.buffer.lastStep, nr.buffer.total, nr.buffer.segment);
        return { buffer: nr.buffer, state, promptId: latest.id };
      }
      const prev = earlier();
      return { buffer: prev ? prev.nr.buffer : new SeriesBuffer(), state: runState("stale"), promptId: latest.id };
    }
    const prev = earlier();
    if (latest.status === "running") {
      return prev ? { buffer: prev.nr.buffer, state: runState("waiting"), promptId: prev.run.id } : empty;
    }
    if (latest.status === "success") {
      return prev ? { buffer: prev.nr.buffer, state: runState(prev.nr.state), promptId: prev.run.id } : empty;
    }
    return { buffer: prev ? prev.nr.buffer : new SeriesBuffer(), state: runState("stale"), promptId: latest.id };
  }
}
