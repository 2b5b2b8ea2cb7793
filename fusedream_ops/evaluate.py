"""python -m fusedream_ops.evaluate — the evaluation command (its code is in :mod:`fusedream_ops.evaluation`)."""
import sys

from .evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
