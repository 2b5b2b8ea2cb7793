#!/bin/sh
# Mutation score of the core op modules (config: setup.cfg [mutmut]); a benchmark figure, not a CI gate.
#   sh benchmarks/mutation.sh          # a fixed random sample of 6 mutants per module (~30-60 min on 2 busy cores)
#   PER_MODULE=1000 sh benchmarks/mutation.sh   # every mutant (~3,200; many hours on a CPU)
# Then: `python -m mutmut show NAME` prints a survivor's diff.
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# 1. generate the mutants and the test map (a pattern that matches no mutant runs nothing else)
nice -n 10 $PY -m mutmut run "no.such.mutant" >/dev/null 2>&1 || true
# 2. run the sample, 3. print the table and the survivors
nice -n 10 $PY -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" \
    $($PY benchmarks/mutation_scores.py sample "${PER_MODULE:-6}") >/dev/null 2>&1 || true
$PY benchmarks/mutation_scores.py
