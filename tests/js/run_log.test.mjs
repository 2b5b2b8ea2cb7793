// Which run a node's chart shows: live events, cancel, cached nodes, tab switches (workflow ids) and a
// reload (the server's history). Run with `node --test tests/js/`.
import { test } from "node:test";
import assert from "node:assert/strict";

import { UI_KEY } from "../../web/js/chart_core.js";
import { MAX_RUNS, RunLog } from "../../web/js/run_log.js";

const TYPES = { 5: { class_type: "FuseDreamTopK" }, 6: { class_type: "FuseDreamBasisOptimizer" } };
const ui = (steps, total = steps.length) => ({ [UI_KEY]: [{ label: "", total, steps, series: { augclip: steps.map((s) => s / 100) } }] });

function progress(log, node, from, to, total) {
  const steps = [];
  for (let s = from; s <= to; s++) steps.push(s);
  log.progress({ node, step: to, total, series: { augclip: to / 100 },
                 chunk: { steps, series: { augclip: steps.map((s) => s / 100) } } });
}

/** A run of the two-node workflow `wf`: Top-k (5) then the optimizer (6), `steps` steps each. A cached node
 * gets no event at all (ComfyUI 0.3.64 resends `executed` only for cached output nodes). */
function completeRun(log, id, wf, t, steps = 30, cached = []) {
  log.start(id, t);
  log.describe(id, wf, TYPES);
  log.cached(id, cached);
  for (const node of ["5", "6"]) {
    if (cached.includes(node)) continue;
    log.executing(node);
    progress(log, node, 1, steps, steps);
    log.executed(id, node, ui(Array.from({ length: steps }, (_, i) => i + 1)));
  }
  log.finished(id, "success");
}

test("a running node shows its live series", () => {
  const log = new RunLog();
  log.start("p1", 1000);
  log.describe("p1", "wf-a", TYPES);
  log.executing("6");
  progress(log, "6", 1, 12, 400);
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.kind, "running");
  assert.equal(v.buffer.lastStep, 12);
  assert.equal(v.promptId, "p1");
});

test("a run cancelled in a node shows its partial series marked cancelled, not the last completed run", () => {
  const log = new RunLog();
  completeRun(log, "p1", "wf-a", 1000, 30);
  log.start("p2", 2000);
  log.describe("p2", "wf-a", TYPES);
  log.executing("5");
  progress(log, "5", 1, 10, 10);
  log.executed("p2", "5", ui([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
  log.executing("6");
  progress(log, "6", 1, 68, 400);
  log.finished("p2", "interrupted", "6");
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.kind, "cancelled");
  assert.equal(v.state.text, "cancelled at step 68 / 400");
  assert.equal(v.buffer.lastStep, 68);
  assert.equal(log.view("wf-a", "5", "FuseDreamTopK").state.kind, "done");
});

test("a node the cancelled run never reached keeps its last series, marked stale", () => {
  const log = new RunLog();
  completeRun(log, "p1", "wf-a", 1000, 30);
  log.start("p2", 2000);
  log.describe("p2", "wf-a", TYPES);
  log.executing("5");
  progress(log, "5", 1, 3, 10);
  log.finished("p2", "interrupted", "5");
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.kind, "stale");
  assert.equal(v.buffer.lastStep, 30, "the earlier run's series is still drawn");
  assert.equal(log.view("wf-a", "5", "FuseDreamTopK").state.kind, "cancelled");
});

test("a cached node (no event in its run) shows the series of the run that produced its output", () => {
  const log = new RunLog();
  completeRun(log, "p1", "wf-a", 1000, 30);
  completeRun(log, "p2", "wf-a", 2000, 20, ["5"]);
  const v = log.view("wf-a", "5", "FuseDreamTopK");
  assert.equal(v.state.kind, "cached");
  assert.equal(v.buffer.lastStep, 30);
  assert.equal(v.promptId, "p2");
  assert.equal(log.view("wf-a", "6", "FuseDreamBasisOptimizer").buffer.lastStep, 20);
});

test("while a new run has not reached a node, the node shows its previous series marked as the previous run", () => {
  // Issue 20: a downstream node showed the previous run's curve unmarked while the run was still upstream.
  const log = new RunLog();
  completeRun(log, "p1", "wf-a", 1000, 30);
  log.start("p2", 2000);
  log.describe("p2", "wf-a", TYPES);
  log.executing("5");
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.kind, "waiting");
  assert.match(v.state.text, /previous run/);
  assert.equal(v.buffer.lastStep, 30);
});

test("each workflow tab sees its own runs, and a node of another type is not matched", () => {
  const log = new RunLog();
  completeRun(log, "p1", "wf-a", 1000, 30);
  completeRun(log, "p2", "wf-b", 2000, 10);
  assert.equal(log.view("wf-a", "6", "FuseDreamBasisOptimizer").buffer.lastStep, 30);
  assert.equal(log.view("wf-b", "6", "FuseDreamBasisOptimizer").buffer.lastStep, 10);
  assert.equal(log.view("wf-c", "6", "FuseDreamBasisOptimizer").state.kind, "idle");
  assert.equal(log.view("wf-a", "6", "FuseDreamCLIPAGSynthesis").buffer.length, 0);
});

function historyItem(id, number, wf, outputs, messages, status = "success") {
  return [id, { prompt: [number, id, TYPES, { extra_pnginfo: { workflow: { id: wf } } }, ["9"]], outputs,
                status: { status_str: status, completed: status === "success", messages } }];
}

test("after a reload the history restores the latest run, its cancel and its cached nodes", () => {
  const history = Object.fromEntries([
    historyItem("p1", 1, "wf-a", { 5: ui([1, 2, 3]), 6: ui([1, 2, 3, 4, 5], 5) },
                [["execution_start", { prompt_id: "p1", timestamp: 100 }], ["execution_cached", { nodes: [] }],
                 ["execution_success", { timestamp: 150 }]]),
    historyItem("p2", 2, "wf-a", { 5: ui([1, 2, 3]) },
                [["execution_start", { prompt_id: "p2", timestamp: 200 }], ["execution_cached", { nodes: ["5"] }],
                 ["execution_interrupted", { node_id: "6", timestamp: 250 }]], "error"),
  ]);
  const log = new RunLog();
  log.loadHistory(history);
  const topk = log.view("wf-a", "5", "FuseDreamTopK");
  assert.equal(topk.state.kind, "cached");
  assert.equal(topk.buffer.lastStep, 3);
  const opt = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(opt.state.kind, "stale", "the partial series is gone after a reload: the last full one, marked");
  assert.equal(opt.buffer.lastStep, 5);
});

test("a malformed history is ignored without throwing", () => {
  const log = new RunLog();
  for (const h of [null, 5, "x", [], { p: null }, { p: { prompt: "x", outputs: null, status: 7 } },
                   { q: { prompt: [1, "q", null, null], outputs: { 5: { [UI_KEY]: [null] } }, status: { messages: [null, 5, ["execution_start", null]] } } }]) {
    log.loadHistory(h);
  }
  assert.equal(log.view("wf-a", "5", "FuseDreamTopK").state.kind, "idle");
});

test("events without a node or prompt id are ignored, and the log keeps at most MAX_RUNS runs", () => {
  const log = new RunLog();
  log.progress(null);
  log.progress({ step: 1 });
  log.executing(null);
  log.finished(undefined, "success");
  for (let i = 0; i < MAX_RUNS + 10; i++) completeRun(log, `p${i}`, "wf-a", 1000 + i, 3);
  assert.equal(log.runs.size, MAX_RUNS);
  assert.ok(!log.runs.has("p0"), "the oldest runs are forgotten");
});

test("a page opened mid-run draws the run in the workflow that queued it once that is known, and nowhere before", () => {
  const log = new RunLog();
  log.progress({ node: "6", prompt_id: "p9", step: 5, total: 10, series: { augclip: 0.05 } });
  assert.equal(log.view("wf-x", "6", "FuseDreamBasisOptimizer").state.kind, "idle", "workflow not known yet");
  log.describe("p9", "wf-x", TYPES);
  const v = log.view("wf-x", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.kind, "running");
  assert.equal(v.buffer.lastStep, 5);
  assert.equal(v.promptId, "p9");
  assert.equal(log.view("wf-y", "6", "FuseDreamBasisOptimizer").state.kind, "idle");
});

test("a run queued from one tab is never drawn on a node of another tab with the same id", () => {
  // Issue 20: with the CLIPAG template running and the TextEmb template shown, TextEmb's node of the same id got
  // the chart. Checked: with unknown-workflow runs counting for every workflow (the old #runsOf) this fails.
  const log = new RunLog();
  log.start("p1", 1000);
  log.progress({ node: "6", prompt_id: "p1", step: 3, total: 100, series: { clip: 0.1 } });
  assert.equal(log.view("wf-textemb", "6", "FuseDreamKandinsky22TextEncode").state.kind, "idle");
  assert.equal(log.view("wf-textemb", "6", "FuseDreamCLIPAGSynthesis").state.kind, "idle");
  log.describe("p1", "wf-clipag", { 6: { class_type: "FuseDreamCLIPAGSynthesis" } });
  assert.equal(log.view("wf-clipag", "6", "FuseDreamCLIPAGSynthesis").state.kind, "running");
  assert.equal(log.view("wf-textemb", "6", "FuseDreamCLIPAGSynthesis").state.kind, "idle");
});

const kept = (steps, total, complete = false) => ({ complete, entry: { label: "", total, steps,
  series: { augclip: steps.map((s) => s / 100) } } });
const interruptedAt = (node) => [["execution_start", { timestamp: 2000 }],
  ["execution_interrupted", { node_id: node }]];

test("after a reload, a run cancelled in a node shows that cancel with the series the server kept", () => {
  // Issue 20: live the chart said "cancelled at step 42 / 5000"; after a reload it showed the previous run,
  // marked stale. Checked: without `restore` (the server's series) the state is "stale" and this fails.
  const log = new RunLog();
  log.loadHistory(Object.fromEntries([
    historyItem("p1", 1, "wf-a", { 6: ui(Array.from({ length: 30 }, (_, i) => i + 1)) }, [["execution_start", { timestamp: 1000 }]]),
    historyItem("p2", 2, "wf-a", {}, interruptedAt("6"), "error"),
  ]));
  assert.deepEqual(log.needsRestore(), ["p2"]);
  log.restore("p2", { 6: kept(Array.from({ length: 42 }, (_, i) => i + 1), 5000) });
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.text, "cancelled at step 42 / 5000");
  assert.equal(v.buffer.length, 42);
  assert.equal(v.promptId, "p2");
});

test("a page reloaded mid-run gets the whole series: the server's points before the reload, then the live ones", () => {
  // Issue 20: a reload during a run left 474 of 600 points marked running even after the run finished.
  // Checked: with events not keyed by prompt (the old `live-N` run) the finished view keeps 126 points, running.
  const log = new RunLog();
  log.seen("p3");
  log.describe("p3", "wf-a", TYPES);
  for (let s = 480; s <= 500; s++) log.progress({ node: "6", prompt_id: "p3", step: s, total: 600, series: { augclip: s / 100 } });
  let v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.buffer.length, 21, "only what the page saw");
  log.restore("p3", { 6: kept(Array.from({ length: 490 }, (_, i) => i + 1), 600) });
  v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.kind, "running");
  assert.deepEqual([v.buffer.length, v.buffer.steps[0], v.buffer.lastStep], [500, 1, 500]);
  for (let s = 501; s <= 600; s++) log.progress({ node: "6", prompt_id: "p3", step: s, total: 600, series: { augclip: s / 100 } });
  log.executed("p3", "6", ui(Array.from({ length: 600 }, (_, i) => i + 1), 600));
  log.finished("p3", "success");
  v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.deepEqual([v.state.kind, v.buffer.length, v.promptId], ["done", 600, "p3"]);
});

test("a prompt a reloaded page finds running in /queue is the latest run, after every run in the history", () => {
  // Seen in the browser check: described from /queue before any event, it kept order 0 and the chart showed the
  // history's older run. Checked: with `seen` setting the order only for unknown prompts this fails.
  const log = new RunLog();
  log.loadHistory(Object.fromEntries([historyItem("p1", 1, "wf-a", { 6: ui([1, 2, 3]) }, [["execution_start", { timestamp: 1000 }]])]));
  log.describe("p2", "wf-a", TYPES);
  log.seen("p2");
  log.progress({ node: "6", prompt_id: "p2", step: 40, total: 3000, series: { augclip: 0.4 } });
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.deepEqual([v.state.kind, v.promptId, v.buffer.lastStep], ["running", "p2", 40]);
});

test("the history completes a run the page saw only in part", () => {
  const log = new RunLog();
  log.seen("p4");
  log.describe("p4", "wf-a", TYPES);
  log.progress({ node: "6", prompt_id: "p4", step: 590, total: 600, series: { augclip: 5.9 } });
  log.finished("p4", "success");
  log.loadHistory(Object.fromEntries([historyItem("p4", 4, "wf-a", { 6: ui(Array.from({ length: 600 }, (_, i) => i + 1), 600) },
    [["execution_start", { timestamp: 4000 }]])]));
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.deepEqual([v.state.kind, v.buffer.length], ["done", 600]);
});

test("an interrupt that names no node cancels the node that was running", () => {
  const log = new RunLog();
  log.start("p1", 1000);
  log.describe("p1", "wf-a", TYPES);
  log.executing("6");
  progress(log, "6", 1, 9, 400);
  log.finished("p1", "interrupted");
  const v = log.view("wf-a", "6", "FuseDreamBasisOptimizer");
  assert.equal(v.state.text, "cancelled at step 9 / 400");
});
