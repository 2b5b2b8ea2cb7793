"""Mutation scores per module from mutmut's result files (``mutants/**/*.py.meta``), as a Markdown table.

    python benchmarks/mutation_scores.py sample 12     # print a fixed random sample of 12 mutant names per module
    python benchmarks/mutation_scores.py               # the table of every checked mutant

Score = killed / checked, where checked = killed + survived + no tests (no selected test executes the mutant)
+ timeout/other. Unchecked mutants (outside the sample) do not count.
"""
import json
import pathlib
import random
import sys

from mutmut.stats import status_by_exit_code


def _metas(root: str):
    return sorted(pathlib.Path(root).rglob("*.py.meta"))


def sample(per_module: int, root: str = "mutants", seed: int = 0) -> list[str]:
    names = []
    for meta in _metas(root):
        keys = sorted(json.loads(meta.read_text())["exit_code_by_key"])
        names += random.Random(seed).sample(keys, min(per_module, len(keys)))
    return names


def table(root: str = "mutants") -> None:
    print("| module | mutants | checked | killed | survived | no tests | timeout/other | score |")
    print("|---|---|---|---|---|---|---|---|")
    survivors = []
    for meta in _metas(root):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        status = {k: status_by_exit_code[c] for k, c in codes.items()}
        values = list(status.values())
        killed, survived, untested = (values.count(s) for s in ("killed", "survived", "no tests"))
        checked = len(values) - values.count("not checked")
        other = checked - killed - survived - untested
        score = f"{killed / checked:.0%}" if checked else "-"
        survivors += [k for k, s in status.items() if s in ("survived", "no tests")]
        print(f"| {meta.relative_to(root).with_suffix('').with_suffix('')} | {len(values)} | {checked} | {killed} "
              f"| {survived} | {untested} | {other} | {score} |")
    print("\nsurvivors (`mutmut show NAME` for the diff):")
    for name in sorted(survivors):
        print(" ", name)


if __name__ == "__main__":
    if sys.argv[1:2] == ["sample"]:
        print("\n".join(sample(int(sys.argv[2]))))
    else:
        table(*sys.argv[1:])
