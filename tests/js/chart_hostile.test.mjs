// The chart reads data from outside the page (websocket events, stored outputs, the history): malformed
// series must be ignored, never drawn, and must never hang the tab. Run with `node --test tests/js/`.
//
// Calls that could loop run in a worker that is stopped after LIMIT_MS: a hang fails the test instead of
// freezing the suite. The slowest bounded case (a million points) takes ~0.2 s here, so 5 s is far above noise.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";

import {
  MAX_POINTS,
  MAX_SERIES,
  SeriesBuffer,
  UI_KEY,
  chartModel,
  downsampleMinMax,
  niceTicks,
  seriesFromOutput,
  valueRange,
} from "../../web/js/chart_core.js";

const LIMIT_MS = 5000;
const CORE = new URL("../../web/js/chart_core.js", import.meta.url).href;

/** Run `body` (source of an async function of the chart_core module `m`) in a worker; its JSON result or a hang. */
function bounded(body) {
  const code = `const { parentPort } = require("node:worker_threads");
    import(${JSON.stringify(CORE)}).then(async (m) => { const r = await (${body})(m); parentPort.postMessage(JSON.stringify(r)); });`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(code, { eval: true });
    const timer = setTimeout(() => {
      worker.terminate();
      resolve({ hung: true });
    }, LIMIT_MS);
    worker.once("message", (msg) => {
      clearTimeout(timer);
      worker.terminate();
      resolve({ hung: false, value: JSON.parse(msg) });
    });
    worker.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const finiteAscending = (xs) => xs.every((x, i) => Number.isFinite(x) && (i === 0 || x > xs[i - 1]));

function assertRealPoints(out, xs, ys) {
  const pairs = new Set(xs.map((x, i) => `${x}|${ys[i]}`));
  out.xs.forEach((x, i) => assert.ok(pairs.has(`${x}|${out.ys[i]}`), `(${x}, ${out.ys[i]}) is not an input point`));
}

test("downsampling a series with one non-numeric step returns instead of looping", async () => {
  const r = await bounded(`(m) => {
    const xs = Array.from({ length: 1000 }, (_, i) => i);
    const ys = xs.map((x) => Math.sin(x / 30));
    xs[500] = "abc";
    return m.downsampleMinMax(xs, ys, 50);
  }`);
  assert.equal(r.hung, false, "downsampleMinMax looped");
  assert.ok(finiteAscending(r.value.xs));
  assert.ok(!r.value.xs.includes("abc"));
  assert.ok(r.value.xs.length <= 2 * 50 + 2, `got ${r.value.xs.length}`);
});

test("downsampling drops NaN, Infinity, null and string steps and values", async () => {
  const r = await bounded(`(m) => {
    const xs = [], ys = [];
    for (let i = 0; i < 2000; i++) { xs.push(i); ys.push(i % 7); }
    const bad = [NaN, Infinity, -Infinity, null, undefined, "7", {}, []];
    bad.forEach((b, k) => { xs[100 + k] = b; ys[900 + k] = b; });
    return m.downsampleMinMax(xs, ys, 40);
  }`);
  assert.equal(r.hung, false, "downsampleMinMax looped");
  assert.ok(finiteAscending(r.value.xs));
  assert.ok(r.value.ys.every(Number.isFinite));
  assert.ok(!r.value.xs.some((x) => x >= 100 && x < 108), "a point with a malformed step was kept");
  assert.ok(!r.value.xs.some((x) => x >= 900 && x < 908), "a point with a malformed value was kept");
});

test("downsampling with a NaN, zero, negative or infinite width or x range returns", async () => {
  const r = await bounded(`(m) => {
    const xs = Array.from({ length: 3000 }, (_, i) => i);
    const ys = xs.map((x) => x % 13);
    return [NaN, 0, -5, Infinity, "300"].map((w) => m.downsampleMinMax(xs, ys, w, NaN, Infinity).xs.length)
      .concat([m.downsampleMinMax(xs, ys, 10, 5, 5).xs.length, m.downsampleMinMax(xs, ys, 10, 9, 1).xs.length]);
  }`);
  assert.equal(r.hung, false, "downsampleMinMax looped");
  for (const n of r.value) assert.ok(n >= 2 && n <= 2 * 4096 + 2, `kept ${n}`);
});

test("downsampling unsorted steps puts real points in step order", () => {
  const xs = [];
  const ys = [];
  for (let i = 0; i < 1000; i++) {
    const x = (i * 389) % 1000; // a permutation of 0..999
    xs.push(x);
    ys.push(x === 537 ? 100 : Math.cos(x));
  }
  const out = downsampleMinMax(xs, ys, 50);
  assert.ok(finiteAscending(out.xs));
  assert.ok(out.ys.includes(100), "the spike survives");
  assertRealPoints(out, xs, ys);
  assert.equal(out.xs[0], 0);
  assert.equal(out.xs[out.xs.length - 1], 999);
});

test("downsampling a million points stays bounded and quick", async () => {
  const r = await bounded(`(m) => {
    const n = 1000000, xs = new Array(n), ys = new Array(n);
    for (let i = 0; i < n; i++) { xs[i] = i; ys[i] = Math.sin(i); }
    return m.downsampleMinMax(xs, ys, 300).xs.length;
  }`);
  assert.equal(r.hung, false, "downsampleMinMax on 1e6 points did not finish in time");
  assert.ok(r.value <= 2 * 300 + 2, `kept ${r.value}`);
});

test("downsampling non-arrays gives an empty line", () => {
  for (const [xs, ys] of [[null, null], [undefined, [1]], ["abc", "def"], [{ length: 5 }, [1, 2]]]) {
    assert.deepEqual(downsampleMinMax(xs, ys, 10), { xs: [], ys: [] });
  }
});

test("an event whose series is null, a number or a string is ignored without throwing", () => {
  const buf = new SeriesBuffer();
  buf.addEvent({ node: "4", step: 2, total: 9, series: { a: 1 },
                 chunk: { steps: [1, 2], series: { a: null, b: [0.5, 0.6], c: 3, d: "xy" } } });
  assert.deepEqual(buf.names, ["b"]);
  assert.deepEqual(buf.column("b"), { xs: [1, 2], ys: [0.5, 0.6] });
  buf.addEvent({ node: "4", step: 3, total: 9, series: null });
  buf.addEvent({ node: "4", step: 4, total: 9, series: "nope", chunk: null });
  buf.addEvent({ node: "4", step: 5, total: 9, chunk: { steps: "1,2", series: null } });
  assert.deepEqual(buf.steps, [1, 2, 3, 4, 5]);
});

test("events with non-numeric, NaN, infinite or null steps add no point", () => {
  const buf = new SeriesBuffer();
  buf.addEvent({ step: 3, total: 10, chunk: { steps: [1, "2", NaN, null, Infinity, 3],
                                               series: { a: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6] } } });
  assert.deepEqual(buf.column("a"), { xs: [1, 3], ys: [0.1, 0.6] });
  for (const step of ["5", NaN, null, Infinity, undefined, {}]) buf.addEvent({ step, total: 10, series: { a: 1 } });
  for (const detail of [null, undefined, "event", 42, []]) buf.addEvent(detail);
  buf.addPoint("9", { a: 1 });
  buf.addPoint(NaN, { a: 1 });
  assert.deepEqual(buf.steps, [1, 3]);
  buf.addEvent({ step: 4, total: "10", label: { evil: true }, series: { a: NaN, b: -Infinity, c: 2 } });
  assert.equal(buf.total, 10);
  assert.equal(buf.label, "");
  assert.deepEqual(buf.column("c"), { xs: [4], ys: [2] });
  assert.deepEqual(buf.names, ["a", "c"]);
});

test("a flood of series names keeps at most MAX_SERIES", () => {
  const buf = new SeriesBuffer();
  const series = {};
  for (let i = 0; i < 10000; i++) series[`s${i}`] = [i];
  buf.addEvent({ step: 1, total: 2, chunk: { steps: [1], series } });
  assert.equal(buf.names.length, MAX_SERIES);
  buf.loadUi({ total: 1, steps: [1], series });
  assert.equal(buf.names.length, MAX_SERIES);
});

test("a huge chunk stays bounded", async () => {
  const r = await bounded(`(m) => {
    const n = 500000, steps = new Array(n), a = new Array(n);
    for (let i = 0; i < n; i++) { steps[i] = i + 1; a[i] = i % 5; }
    const buf = new m.SeriesBuffer();
    buf.addEvent({ step: n, total: n, chunk: { steps, series: { a } } });
    return [buf.length, buf.steps[0], buf.lastStep];
  }`);
  assert.equal(r.hung, false);
  const [length, first, last] = r.value;
  assert.ok(length <= MAX_POINTS, `kept ${length}`);
  assert.equal(first, 1);
  assert.equal(last, 500000);
});

test("loadUi of malformed ui entries gives an empty or clean buffer", () => {
  const buf = new SeriesBuffer();
  for (const entry of [null, undefined, 5, "x", [], { steps: "1,2", series: { a: [1, 2] } },
                       { steps: [1, 2], series: null }, { steps: [1, 2], series: { a: null } },
                       { steps: [1, 2], series: "ab" }, { total: NaN, steps: [NaN, "1"], series: { a: [1, 2] } }]) {
    buf.loadUi(entry);
    assert.equal(buf.length === 0 || buf.names.length === 0, true, JSON.stringify(entry));
    assert.ok(Number.isFinite(buf.total));
  }
});

test("loadUi puts unsorted and repeated steps in order and drops malformed points", () => {
  const buf = new SeriesBuffer();
  buf.loadUi({ label: "x", total: 10, steps: [5, 1, "3", 2, 5, NaN, 4, null],
               series: { a: [0.5, 0.1, 0.3, 0.2, 0.55, 9, Infinity, 7], b: null } });
  assert.deepEqual(buf.steps, [1, 2, 4, 5]);
  assert.deepEqual(buf.column("a"), { xs: [1, 2, 5], ys: [0.1, 0.2, 0.55] });
  assert.deepEqual(buf.names, ["a"]);
});

test("seriesFromOutput ignores an entry that is not an object", () => {
  assert.equal(seriesFromOutput({ [UI_KEY]: [null] }), null);
  assert.equal(seriesFromOutput({ [UI_KEY]: "abc" }), null);
  assert.equal(seriesFromOutput({ [UI_KEY]: [{ steps: [1] }, 7] }), null);
  assert.equal(seriesFromOutput("output"), null);
  assert.equal(seriesFromOutput(null), null);
});

test("huge values give finite, bounded axes", () => {
  const r = valueRange([-1e308, 1e308]);
  const axis = niceTicks(r[0], r[1], 4);
  assert.ok(axis.ticks.length >= 2 && axis.ticks.length <= 100);
  assert.ok(axis.ticks.every(Number.isFinite));
  assert.ok(axis.min <= -1e308 && axis.max >= 1e308);
  assert.deepEqual(niceTicks(NaN, 1, 4).ticks, [0, 1]);
});

test("the whole chart model of a hostile buffer is finite", async () => {
  const r = await bounded(`(m) => {
    const buf = new m.SeriesBuffer();
    buf.addEvent({ step: 6, total: 6, chunk: { steps: [1, 2, "3", 4, 5, 6],
      series: { a: [1e308, -1e308, 0, NaN, null, 2], b: [null, null, null, null, null, null], c: [1, 2, 3, 4, 5, 6] } } });
    buf.addEvent({ step: 7, total: 7, chunk: { steps: [7, 7, 6], series: { c: [1, 2, 3] } } });
    const model = m.chartModel(buf, NaN, 200);
    const model2 = m.chartModel(buf, 300, -50);
    return { model, model2 };
  }`);
  assert.equal(r.hung, false);
  const { model } = r.value;
  for (const p of model.panels) {
    assert.ok([p.x, p.y, p.w, p.h, p.axis.min, p.axis.max].every(Number.isFinite));
    for (const s of p.series) assert.ok(s.line.xs.every(Number.isFinite) && s.line.ys.every(Number.isFinite));
  }
});

test("a chart model draws nothing for an empty buffer", () => {
  const model = chartModel(new SeriesBuffer(), 300, 200);
  assert.deepEqual(model.panels, []);
  assert.deepEqual(model.names, []);
});

/** `target` wrapped so that every property read is counted in `counter.reads`. */
function counted(target, counter) {
  return new Proxy(target, { get(t, key, receiver) { counter.reads += 1; return Reflect.get(t, key, receiver); } });
}

test("an event with thousands of series caps them before looping over its steps (work grows with the cap)", () => {
  // Issue 19: 8000 series x 8000 steps took 17 s because every step walked all 8000 columns before the cap.
  // Counting reads instead of timing: with the cap applied first, the columns are read MAX_SERIES x steps times
  // (plus one look at each name); with it applied after, 8000 x steps. Checked: with the old loop (all array
  // columns per step) this fails with ~8e5 reads.
  const names = 2000;
  const steps = 200;
  const counter = { reads: 0 };
  const series = {};
  for (let k = 0; k < names; k++) {
    series[`s${k}`] = counted(Array.from({ length: steps }, (_, i) => i * 1e-3 + k), counter);
  }
  const stepList = Array.from({ length: steps }, (_, i) => i + 1);
  const buf = new SeriesBuffer();
  buf.addEvent({ node: "1", step: steps, total: steps, chunk: { steps: stepList, series: counted(series, counter) } });
  assert.equal(buf.names.length, MAX_SERIES);
  assert.equal(buf.length, steps);
  assert.ok(counter.reads <= 4 * names + 4 * MAX_SERIES * steps, `${counter.reads} reads`);
});
