"""The score chart in a real browser against a real ComfyUI: headless Chromium driven over the DevTools protocol.

Loads ComfyUI's own frontend (the ``comfyui-frontend-package`` the server serves), opens the probe workflow
(``tests/e2e/probe_workflow.json``: an optimizing probe node, a preview, Save Animated WEBP), queues it from the
page, and checks that the extension drew the live series on the node, that it survives collapse and resize,
that a re-run starts a fresh chart, and that a run reopened from the history (outputs restored, no events)
brings the chart back. Screenshots go to ``--out``.

    python tests/e2e/browser_check.py --comfyui /work/comfyui --python /work/comfyui-venv/bin/python --out /tmp/shots
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from comfy_server import (CAPS, PROBE_PACK_DIR, ComfyServer, WebSocket, _die_with_parent, free_port,
                          write_fixture_models)

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,900", "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Browser:
    """One headless Chromium page, spoken to with DevTools protocol commands."""

    def __init__(self, chromium: str):
        self.profile = tempfile.mkdtemp(prefix="fusedream-chromium-")
        self.port = free_port()
        self.proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--remote-debugging-port={self.port}",
                                      f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        target = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    target = next(t for t in json.loads(r.read()) if t["type"] == "page")
                break
            except Exception:
                time.sleep(0.2)
        if target is None:
            self.close()
            raise RuntimeError("Chromium's DevTools endpoint did not come up")
        path = target["webSocketDebuggerUrl"].split(str(self.port), 1)[1]
        self.ws = WebSocket("127.0.0.1", self.port, path)
        self.next_id = 0
        self.console: list[str] = []
        self.call("Runtime.enable")
        self.call("Page.enable")

    def call(self, method: str, params: dict | None = None, timeout: float = 60):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send_text(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"]["args"]
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append(f"{msg['params']['type']}: {text}")
            elif msg.get("method") == "Runtime.exceptionThrown":
                d = msg["params"]["exceptionDetails"]
                self.console.append(f"exception: {d.get('exception', {}).get('description', d.get('text'))}")

    def js(self, expression: str, timeout: float = 60):
        """Evaluate ``expression`` (awaited) in the page and return its JSON value."""
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                        timeout=timeout)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page error: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, poll: float = 0.25):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(poll)
        raise TimeoutError(f"timed out waiting for: {expression}")

    def screenshot(self, path: str) -> str:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


CHART_STATE = """(() => {
  const app = window.comfyAPI.app.app;
  const node = app.graph.getNodeById(1);
  const el = node?.fusedreamChart?.root;
  if (!el) return null;
  const r = el.getBoundingClientRect();
  const c = el.querySelector('canvas');
  return {points: Number(el.dataset.points || 0), series: el.dataset.series || '', w: r.width, h: r.height,
          canvasW: c.width, canvasH: c.height, visible: r.width > 0 && r.height > 0 && el.offsetParent !== null,
          collapsed: !!node.flags?.collapsed, size: [node.size[0], node.size[1]]};
})()"""


def check(server: ComfyServer, browser: Browser, out: str) -> dict:
    report = {}
    with open(os.path.join(HERE, "probe_workflow.json")) as f:
        workflow = json.load(f)
    browser.call("Page.navigate", {"url": server.url + "/"})
    browser.wait_for("!!(window.comfyAPI && window.comfyAPI.app.app.graph && typeof LiteGraph !== 'undefined' "
                     "&& LiteGraph.registered_node_types['FuseDreamProbe_Monitor'])", timeout=120)
    time.sleep(2.0)  # the first-visit dialog (templates) opens a moment after the node types are registered
    report["extension_registered"] = browser.wait_for(
        "window.comfyAPI.app.app.extensions.some(e => e.name === 'FuseDream.ScoreChart')", timeout=60)
    for _ in range(3):
        browser.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Escape", "code": "Escape",
                                                "windowsVirtualKeyCode": 27})
        browser.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Escape", "code": "Escape",
                                                "windowsVirtualKeyCode": 27})
        time.sleep(0.3)
    report["dialogs_left_open"] = browser.js("document.querySelectorAll('.p-dialog').length")
    browser.js(f"window.comfyAPI.app.app.loadGraphData({json.dumps(workflow)}).then(() => true)")
    report["before_run"] = browser.wait_for(CHART_STATE, timeout=30)
    browser.screenshot(os.path.join(out, "1_before_run.png"))

    report["saved_widget_values"] = browser.js(
        "window.comfyAPI.app.app.graph.serialize().nodes.find(n => n.id === 1).widgets_values")
    report["api_prompt_inputs"] = browser.js(
        "window.comfyAPI.app.app.graphToPrompt().then(p => Object.keys(p.output['1'].inputs))")
    browser.js("window.comfyAPI.app.app.queuePrompt(0).then(() => true)")
    mid = browser.wait_for(f"(() => {{ const s = {CHART_STATE}; return s && s.points >= 10 && s.points < 60 ? s : null; }})()",
                           timeout=60, poll=0.1)
    report["mid_run"] = mid
    browser.screenshot(os.path.join(out, "2_mid_run.png"))
    report["after_run"] = browser.wait_for(
        f"(() => {{ const s = {CHART_STATE}; return s && s.points === 60 ? s : null; }})()", timeout=60)
    time.sleep(1.0)
    browser.screenshot(os.path.join(out, "3_after_run.png"))

    browser.js("(() => { const n = window.comfyAPI.app.app.graph.getNodeById(1); n.collapse(true); "
               "window.comfyAPI.app.app.graph.setDirtyCanvas(true, true); return true; })()")
    time.sleep(0.5)
    report["collapsed"] = browser.js(CHART_STATE)
    browser.screenshot(os.path.join(out, "4_collapsed.png"))
    browser.js("(() => { const n = window.comfyAPI.app.app.graph.getNodeById(1); n.collapse(false); "
               "n.setSize([520, 620]); window.comfyAPI.app.app.graph.setDirtyCanvas(true, true); return true; })()")
    time.sleep(0.8)
    report["resized"] = browser.js(CHART_STATE)
    browser.screenshot(os.path.join(out, "5_resized.png"))

    # Re-run with another seed: the chart must start over (the node begins executing -> cleared), then refill.
    browser.js("(() => { const n = window.comfyAPI.app.app.graph.getNodeById(1); "
               "n.widgets.find(w => w.name === 'seed').value = 11; return true; })()")
    browser.js("window.__fdMin = 1e9; window.__fdTimer = setInterval(() => { const n = window.comfyAPI.app.app.graph"
               ".getNodeById(1); const p = n.fusedreamChart.buffer.length; if (p < window.__fdMin) window.__fdMin = p; }, 20); true")
    browser.js("window.comfyAPI.app.app.queuePrompt(0).then(() => true)")
    time.sleep(0.5)
    browser.wait_for(f"(() => {{ const s = {CHART_STATE}; return s && s.points === 60 ? s : null; }})()", timeout=60)
    report["rerun_min_points"] = browser.js("(() => { clearInterval(window.__fdTimer); return window.__fdMin; })()")

    # Reopen the run from the history, as the queue's Load does: the graph is loaded anew, outputs are restored
    # into app.nodeOutputs, no event and no onExecuted call.
    history = server.get("/history")
    prompt_id, item = sorted(history.items(), key=lambda kv: kv[1]["prompt"][0])[-1]
    browser.js(f"window.comfyAPI.app.app.loadGraphData({json.dumps(workflow)}).then(() => true)")
    report["reloaded_empty"] = browser.wait_for(CHART_STATE, timeout=30)
    browser.js(f"(() => {{ window.comfyAPI.app.app.nodeOutputs = {json.dumps(item['outputs'])}; "
               "window.comfyAPI.app.app.graph.setDirtyCanvas(true, true); return true; })()")
    report["restored_from_history"] = browser.wait_for(
        f"(() => {{ const s = {CHART_STATE}; return s && s.points === 60 ? s : null; }})()", timeout=20)
    browser.screenshot(os.path.join(out, "6_restored.png"))

    browser.js("(() => { const app = window.comfyAPI.app.app; app.graph.remove(app.graph.getNodeById(1)); return true; })()")
    report["removed_has_no_chart_left"] = browser.js("document.querySelectorAll('.fusedream-chart').length === 0 || "
                                                     "[...document.querySelectorAll('.fusedream-chart')].every(e => !e.isConnected)")
    report["console_errors"] = [c for c in browser.console if c.startswith(("error", "exception"))]
    return report


WORKFLOW_CHARTS = """(() => {
  const app = window.comfyAPI.app.app;
  return app.graph._nodes.filter(n => n.fusedreamChart).map(n => ({
    id: n.id, type: n.type, points: n.fusedreamChart.buffer.length, series: n.fusedreamChart.buffer.names,
    label: n.fusedreamChart.buffer.label, visible: n.fusedreamChart.root.getBoundingClientRect().width > 0}));
})()"""


def open_page(server: ComfyServer, browser: Browser, node_type: str) -> None:
    browser.call("Page.navigate", {"url": server.url + "/"})
    browser.wait_for("!!(window.comfyAPI && window.comfyAPI.app.app.graph && typeof LiteGraph !== 'undefined' "
                     f"&& LiteGraph.registered_node_types[{json.dumps(node_type)}])", timeout=120)
    time.sleep(2.0)
    for _ in range(3):
        for kind in ("keyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", {"type": kind, "key": "Escape", "code": "Escape",
                                                    "windowsVirtualKeyCode": 27})
        time.sleep(0.3)


def run_workflow(server: ComfyServer, browser: Browser, path: str, out: str, caps: dict) -> list:
    """Open a UI workflow in the page, lower its work sizes, queue it from the page, screenshot the charts."""
    with open(path) as f:
        workflow = json.load(f)
    open_page(server, browser, workflow["nodes"][0]["type"])
    browser.js(f"window.comfyAPI.app.app.loadGraphData({json.dumps(workflow)}).then(() => true)")
    browser.js(f"""(() => {{ const caps = {json.dumps(caps)};
      for (const n of window.comfyAPI.app.app.graph._nodes) for (const w of n.widgets || [])
        if (w.name in caps && typeof w.value === 'number' && w.value > caps[w.name])
          w.value = Math.max(caps[w.name], w.options?.min ?? 0);
      return true; }})()""")
    before = len(server.get("/history"))
    browser.js("window.comfyAPI.app.app.queuePrompt(0).then(() => true)")
    deadline = time.monotonic() + 900
    while len(server.get("/history")) == before and time.monotonic() < deadline:
        time.sleep(1.0)
    time.sleep(1.5)
    charts = browser.js(WORKFLOW_CHARTS)
    browser.js("(() => { const c = window.comfyAPI.app.app.canvas; c.ds.scale = 0.6; c.setDirty(true, true); "
               "return true; })()")
    time.sleep(0.8)
    browser.screenshot(os.path.join(out, os.path.splitext(os.path.basename(path))[0].replace(" ", "_") + ".png"))
    return charts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"))
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable))
    parser.add_argument("--out", default="/tmp/fusedream-browser")
    parser.add_argument("--workflow", action="append", default=[],
                        help="also run this UI workflow from the page (with fixture models, work sizes capped) "
                             "and screenshot its charts; may be repeated")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if not (args.comfyui and chromium):
        print("needs --comfyui (or COMFYUI_PATH) and chromium on PATH (or CHROMIUM)", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    base = tempfile.mkdtemp(prefix="fusedream-browser-")
    server = ComfyServer(args.comfyui, args.python, base=base, extra_packs=(PROBE_PACK_DIR,))
    browser = None
    try:
        if args.workflow:
            write_fixture_models(server.models_dir)
        server.start()
        browser = Browser(chromium)
        report = check(server, browser, args.out)
        for path in args.workflow:
            report[os.path.basename(path)] = run_workflow(server, browser, path, args.out, CAPS)
        print(json.dumps(report, indent=1))
        return 0
    finally:
        if browser is not None:
            browser.close()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
