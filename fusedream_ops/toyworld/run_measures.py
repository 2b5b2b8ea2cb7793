"""The toy-world claims' score records: one list per measure, one entry per run, summarised by the mean."""
from __future__ import annotations

import inspect


class RunMeasures:
    """A subclass annotates its measures (``exact: list[bool]``); each starts as an empty list and gets one entry
    per run. ``NO_RUNS`` is the mean of a measure no run has filled."""

    NO_RUNS = float("nan")

    def __init__(self):
        for name in self.measures():
            setattr(self, name, [])

    @classmethod
    def measures(cls) -> list[str]:
        """The measures the class annotates, in declaration order."""
        return list(inspect.get_annotations(cls))

    def mean(self, name: str) -> float:
        values = [float(v) for v in getattr(self, name)]
        return sum(values) / len(values) if values else self.NO_RUNS

    def summary(self) -> dict[str, float]:
        """Every measure's mean, rounded to 4 places."""
        return {name: round(self.mean(name), 4) for name in self.measures()}


def mean_of(name: str) -> property:
    """A read-only attribute: the mean of measure ``name``."""
    return property(lambda self: self.mean(name), doc=f"The mean of ``{name}``.")
