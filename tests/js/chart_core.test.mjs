// The score chart's pure parts: run with `node --test tests/js/`.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  EVENT,
  UI_KEY,
  SeriesBuffer,
  downsampleMinMax,
  formatTick,
  formatValue,
  layoutPanels,
  linearScale,
  niceStep,
  niceTicks,
  seriesFromOutput,
  valueRange,
} from "../../web/js/chart_core.js";

test("event and ui names match nodes/monitor.py", () => {
  assert.equal(EVENT, "fusedream.progress");
  assert.equal(UI_KEY, "fusedream_series");
});

test("a chunked event adds every point it carries, missing values skipped", () => {
  const buf = new SeriesBuffer();
  buf.addEvent({
    node: "4", label: "optimize", step: 3, total: 10, series: { augclip: 0.3 },
    chunk: { steps: [1, 2, 3], series: { augclip: [0.1, 0.2, 0.3], lpips: [null, 0.5, null] } },
  });
  assert.deepEqual(buf.steps, [1, 2, 3]);
  assert.equal(buf.label, "optimize");
  assert.equal(buf.total, 10);
  assert.deepEqual(buf.names, ["augclip", "lpips"]);
  assert.deepEqual(buf.column("augclip"), { xs: [1, 2, 3], ys: [0.1, 0.2, 0.3] });
  assert.deepEqual(buf.column("lpips"), { xs: [2], ys: [0.5] });
  assert.equal(buf.latest("lpips"), 0.5);
});

test("an event without a chunk adds its one point", () => {
  const buf = new SeriesBuffer();
  buf.addEvent({ node: "4", step: 1, total: 5, series: { loss: 2 } });
  buf.addEvent({ node: "4", step: 2, total: 5, series: { loss: 1.5 } });
  assert.deepEqual(buf.column("loss"), { xs: [1, 2], ys: [2, 1.5] });
});

test("a step not after the last one starts a new run", () => {
  const buf = new SeriesBuffer();
  for (let s = 1; s <= 5; s++) buf.addPoint(s, { a: s });
  buf.addEvent({ step: 1, total: 5, series: { b: 9 } });
  assert.deepEqual(buf.steps, [1]);
  assert.deepEqual(buf.column("a").xs, []);
  assert.deepEqual(buf.column("b").ys, [9]);
});

test("the buffer stays bounded, spans the run evenly and keeps the last step", () => {
  const buf = new SeriesBuffer(100);
  for (let s = 1; s <= 10000; s++) buf.addPoint(s, { a: s }, s === 10000);
  assert.ok(buf.length <= 100, `kept ${buf.length}`);
  assert.equal(buf.steps[0], 1);
  assert.equal(buf.steps[buf.length - 1], 10000);
  const gaps = new Set(buf.steps.slice(1, -1).map((s, i) => s - buf.steps[i]));
  assert.equal(gaps.size, 1);
});

test("loadUi restores a finished run from the node's ui output", () => {
  const output = {
    [UI_KEY]: [{ label: "", total: 4, steps: [1, 2, 3, 4], series: { augclip: [0.1, 0.2, 0.25, 0.3], lpips: [0.9, null, 0.7, null] } }],
    images: [],
  };
  const entry = seriesFromOutput(output);
  const buf = new SeriesBuffer();
  buf.addPoint(99, { stale: 1 });
  buf.loadUi(entry);
  assert.equal(buf.total, 4);
  assert.deepEqual(buf.names, ["augclip", "lpips"]);
  assert.deepEqual(buf.column("lpips"), { xs: [1, 3], ys: [0.9, 0.7] });
  assert.equal(buf.latest("augclip"), 0.3);
});

test("seriesFromOutput is null for outputs without series", () => {
  assert.equal(seriesFromOutput(undefined), null);
  assert.equal(seriesFromOutput({ images: [] }), null);
  assert.equal(seriesFromOutput({ [UI_KEY]: [] }), null);
});

test("downsampling keeps each pixel column's min and max and the end points", () => {
  const xs = [];
  const ys = [];
  for (let i = 0; i < 1000; i++) {
    xs.push(i);
    ys.push(i === 537 ? 100 : i === 212 ? -100 : Math.sin(i / 50));
  }
  const out = downsampleMinMax(xs, ys, 50);
  assert.ok(out.xs.length <= 2 * 50 + 2, `got ${out.xs.length}`);
  assert.ok(out.ys.includes(100) && out.ys.includes(-100), "spikes survive");
  assert.equal(out.xs[0], 0);
  assert.equal(out.xs[out.xs.length - 1], 999);
  for (let i = 1; i < out.xs.length; i++) assert.ok(out.xs[i] > out.xs[i - 1], "steps stay in order");
  for (let i = 0; i < out.xs.length; i++) assert.equal(out.ys[i], ys[out.xs[i]], "points are real points");
});

test("downsampling leaves short series untouched", () => {
  const out = downsampleMinMax([1, 2, 3], [3, 1, 2], 300);
  assert.deepEqual(out, { xs: [1, 2, 3], ys: [3, 1, 2] });
});

test("value range ignores non-finite values and pads a constant series", () => {
  assert.deepEqual(valueRange([0.3, null, NaN, 0.1, 0.2]), [0.1, 0.3]);
  const [lo, hi] = valueRange([2, 2]);
  assert.ok(lo < 2 && hi > 2);
  assert.deepEqual(valueRange([0]), [-1, 1]);
  assert.equal(valueRange([null]), null);
});

test("nice ticks cover the data on round numbers", () => {
  assert.equal(niceStep(1, 4), 0.5);
  assert.equal(niceStep(0.13, 4), 0.05);
  assert.equal(niceStep(700, 4), 200);
  const t = niceTicks(0.213, 0.347, 4);
  assert.ok(t.min <= 0.213 && t.max >= 0.347);
  assert.equal(t.step, 0.05);
  assert.deepEqual(t.ticks, [0.2, 0.25, 0.3, 0.35]);
  const neg = niceTicks(-3.2, -1.1, 4);
  assert.deepEqual(neg.ticks, [-4, -3, -2, -1]);
});

test("linear scale maps the domain onto the pixel range, y flipped", () => {
  const y = linearScale(0, 1, 100, 0);
  assert.equal(y(0), 100);
  assert.equal(y(1), 0);
  assert.equal(y(0.25), 75);
  assert.equal(linearScale(5, 5, 0, 10)(5), 5);
});

test("tick labels carry as many decimals as the step needs", () => {
  assert.equal(formatTick(0.25, 0.05), "0.25");
  assert.equal(formatTick(0.3, 0.05), "0.30");
  assert.equal(formatTick(200, 200), "200");
  assert.equal(formatTick(0.5, 0.5), "0.5");
  assert.equal(formatValue(0.312345), "0.3123");
  assert.equal(formatValue(null), "–");
  assert.equal(formatValue(123456), "1.23e+5");
});

test("panels stack inside the widget, one per series", () => {
  const panels = layoutPanels(2, 300, 200, { left: 40, right: 8, top: 14, bottom: 16, gap: 4 });
  assert.equal(panels.length, 2);
  for (const p of panels) {
    assert.equal(p.x, 40);
    assert.equal(p.w, 252);
    assert.ok(p.y >= 0 && p.y + p.h <= 200 - 16 + 1e-9);
  }
  assert.ok(panels[1].y >= panels[0].y + panels[0].h);
  assert.deepEqual(layoutPanels(0, 300, 200), []);
});
