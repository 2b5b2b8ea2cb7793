#!/bin/sh
# Mutation score of the core op modules (config: setup.cfg [mutmut]); a benchmark figure, not a CI gate.
#   sh benchmarks/mutation.sh                 # all 12 modules, ~1 h on 2 busy cores
#   sh benchmarks/mutation.sh "fusedream_ops.augment*"   # one module's mutants
# Results: `mutmut results` (survivors), `mutmut show <name>` (the diff), per-module counts below.
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
nice -n 10 $PY -m mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@"
$PY benchmarks/mutation_scores.py
