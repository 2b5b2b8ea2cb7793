"""The series of recent runs, kept on the server for the page: ``GET /fusedream/series/{prompt_id}``.

ComfyUI's history holds a node's ``ui`` output only when the node finished: the series of a node that was cancelled
or failed, and the points a page missed while it was being reloaded, exist nowhere else. Each ``NodeMonitor`` puts
its series here under (prompt id, node id) as it runs; the chart reads it back after a reload and when a run ends
(docs/monitor.md). Only the series is kept (never images), for the last ``MAX_PROMPTS`` prompts.

Answer: ``{node id: {"entry": <ui entry, as in the node's ui output>, "complete": <the last step was reached>}}``,
``{}`` for a prompt not kept.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Protocol

from . import comfy

ROUTE = "/fusedream/series/{prompt_id}"
MAX_PROMPTS = 64
_STORE_ATTRIBUTE = "_fusedream_recent_series"


class SeriesSource(Protocol):
    def entry(self) -> dict: ...

    @property
    def complete(self) -> bool: ...


class RecentSeries:
    """Series sources by prompt id and node id; the oldest prompts beyond ``max_prompts`` are forgotten."""

    def __init__(self, max_prompts: int = MAX_PROMPTS):
        self.max_prompts = max_prompts
        self._runs: OrderedDict[str, dict[str, SeriesSource]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, prompt_id: str, node_id: str, source: SeriesSource) -> None:
        with self._lock:
            nodes = self._runs.setdefault(str(prompt_id), {})
            self._runs.move_to_end(str(prompt_id))
            nodes[str(node_id)] = source
            while len(self._runs) > self.max_prompts:
                self._runs.popitem(last=False)

    def of_prompt(self, prompt_id: str) -> dict:
        with self._lock:
            nodes = dict(self._runs.get(str(prompt_id), {}))
        return {node: {"entry": src.entry(), "complete": bool(src.complete)} for node, src in nodes.items()}


_local = RecentSeries()


def store() -> RecentSeries:
    """The one store of the server process (kept on ComfyUI's PromptServer, so a second import of the pack, as the
    e2e probe pack does, shares it and the route is added once); a module-level one outside ComfyUI."""
    instance = comfy.prompt_server()
    if instance is None:
        return _local
    found = getattr(instance, _STORE_ATTRIBUTE, None)
    if found is None:
        found = RecentSeries()
        setattr(instance, _STORE_ATTRIBUTE, found)
        comfy.add_json_route(ROUTE, lambda match: found.of_prompt(match.get("prompt_id", "")))
    return found


def remember(prompt_id: str | None, node_id: str | None, source: SeriesSource) -> None:
    """Keep ``source`` for the page, when the run is a ComfyUI prompt."""
    if prompt_id is not None and node_id is not None:
        store().add(prompt_id, node_id, source)


def register() -> Callable | None:
    """Create the store (and its route) at import, before ComfyUI's router is frozen."""
    return store().of_prompt if comfy.prompt_server() is not None else None


register()
