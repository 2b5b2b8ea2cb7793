"""python -m fusedream_ops.evaluation — the same as python -m fusedream_ops.evaluate."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
