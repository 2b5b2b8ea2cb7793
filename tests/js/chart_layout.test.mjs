// Legible charts: panels keep a minimum height, two series of alike ranges share a panel, the run-state mark has
// its own line. Run with `node --test tests/js/`.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  CHART_HEIGHT,
  MARK_HEIGHT,
  MIN_PLOT_HEIGHT,
  SeriesBuffer,
  chartModel,
  describeProgress,
  groupSeries,
  layoutPanels,
  runState,
  tickCount,
} from "../../web/js/chart_core.js";

function buffer(series, steps = 50) {
  const buf = new SeriesBuffer();
  for (let s = 1; s <= steps; s++) {
    const values = {};
    for (const [name, f] of Object.entries(series)) values[name] = f(s);
    buf.addPoint(s, values, s === steps);
  }
  buf.total = steps;
  return buf;
}

test("plots are never lower than MIN_PLOT_HEIGHT: panels that do not fit are left out and counted", () => {
  const panels = layoutPanels(5, 300, CHART_HEIGHT);
  assert.ok(panels.length >= 1 && panels.length < 5);
  for (const p of panels) assert.ok(p.h >= MIN_PLOT_HEIGHT, `plot ${p.h} px`);
  const model = chartModel(buffer({ a: (s) => s, b: (s) => -s * 100, c: (s) => Math.sin(s) * 1e-3 }), 300, CHART_HEIGHT);
  assert.equal(model.panels.length + model.hidden, 3);
  for (const p of model.panels) assert.ok(p.h >= MIN_PLOT_HEIGHT);
});

test("the reserved chart height holds two panels and the run-state mark line", () => {
  const buf = buffer({ augclip: (s) => 0.3 + s * 1e-3, lpips: (s) => 0.9 - s * 0.01 });
  const model = chartModel(buf, 300, CHART_HEIGHT, runState("cancelled", 50, 400));
  assert.equal(model.panels.length, 2);
  assert.equal(model.hidden, 0);
  for (const p of model.panels) {
    assert.ok(p.h >= MIN_PLOT_HEIGHT, `plot ${p.h} px`);
    assert.ok(p.y - 16 >= MARK_HEIGHT - 1e-9, "the panel title stays below the mark line");
  }
});

test("two series with alike ranges share a panel, a flat one next to a wide one does not", () => {
  assert.deepEqual(groupSeries(["clip", "patch_clip"], { clip: [0.2, 0.3], patch_clip: [0.18, 0.31] }),
                   [["clip", "patch_clip"]]);
  assert.deepEqual(groupSeries(["augclip", "lpips"], { augclip: [0.30, 0.33], lpips: [0.4, 0.9] }),
                   [["augclip"], ["lpips"]]);
  assert.deepEqual(groupSeries(["a", "b", "c"], { a: [0, 1], b: [0, 1], c: [0, 1] }), [["a", "b"], ["c"]]);
  assert.deepEqual(groupSeries(["a", "b"], { a: [1, 1], b: [1, 1] }), [["a"], ["b"]]);
  assert.deepEqual(groupSeries(["a", "b"], { a: null, b: [0, 1] }), [["a"], ["b"]]);
  const model = chartModel(buffer({ clip: (s) => 0.2 + s * 1e-3, patch_clip: (s) => 0.19 + s * 1e-3 }), 300, CHART_HEIGHT);
  assert.equal(model.panels.length, 1);
  assert.deepEqual(model.panels[0].series.map((s) => s.name), ["clip", "patch_clip"]);
});

test("tick labels are at least 22 px apart", () => {
  for (const h of [56, 80, 150, 400]) {
    const n = tickCount(h);
    assert.ok(n >= 2 && h / n >= 22 - 1e-9 || n === 2, `${n} ticks in ${h} px`);
  }
});

test("run states say what the chart shows", () => {
  assert.equal(runState("cancelled", 68, 400).text, "cancelled at step 68 / 400");
  assert.equal(runState("error", 3).text, "failed at step 3");
  assert.equal(runState("done").text, "");
  assert.equal(runState("running").text, "");
  assert.ok(runState("stale").text.startsWith("stale"));
  assert.ok(runState("cached").text.startsWith("cached"));
  assert.equal(runState("bogus").kind, "idle");
});

test("a composition grid's chart reads per cell: one line per cell, boundaries, captions in the widget's units", () => {
  // Issue 20: 18 cells of 10 steps were one sawtooth captioned "step 180 / 180", cancelled "at step 31 / 18000".
  // Checked: without the segment (the old caption and line) every assertion below fails.
  const segment = { unit: "cell", size: 10, labels: ["0.65 top-left", "0.65 top-center", "0.65 top-right"] };
  const buf = new SeriesBuffer();
  for (let s = 1; s <= 24; s++) {
    buf.addEvent({ node: "9", step: s, total: 180, series: { augclip: 0.2 + (s % 10) * 0.01 }, segment });
  }
  const model = chartModel(buf, 400, CHART_HEIGHT);
  assert.equal(model.caption, "cell 3 / 18 (0.65 top-right) · step 4 / 10");
  assert.deepEqual(model.boundaries.slice(0, 3), [10, 20, 30]);
  const line = model.panels[0].series[0].line;
  assert.deepEqual(line.starts.map((i) => line.xs[i]), [11, 21], "a new line starts with each cell");
  assert.equal(runState("cancelled", 31, 18000, { ...segment, size: 1000 }).text,
    "cancelled in cell 1 / 18 (0.65 top-left) at step 31 / 1000");
  assert.equal(describeProgress(40, 40, null), "step 40 / 40");
});
