"""Mutation score per module from mutmut's result files (``mutants/**/*.py.meta``), as a Markdown table.

Score = killed / (killed + survived + timeout + no tests); "no tests" are mutants no selected test executes.
"""
import json
import pathlib
import sys

from mutmut.stats import status_by_exit_code


def main(root: str = "mutants") -> int:
    print("| module | mutants | killed | survived | no tests | timeout/other | score |")
    print("|---|---|---|---|---|---|---|")
    for meta in sorted(pathlib.Path(root).rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        status = [status_by_exit_code[c] for c in codes.values()]
        count = {s: status.count(s) for s in set(status)}
        killed, survived, untested = count.get("killed", 0), count.get("survived", 0), count.get("no tests", 0)
        other = len(status) - killed - survived - untested - count.get("not checked", 0)
        checked = killed + survived + untested + other
        score = f"{killed / checked:.0%}" if checked else "-"
        print(f"| {meta.relative_to(root).with_suffix('').with_suffix('')} | {len(status)} | {killed} | {survived} "
              f"| {untested} | {other} | {score} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
