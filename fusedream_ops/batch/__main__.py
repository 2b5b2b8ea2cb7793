"""python -m fusedream_ops.batch — see :mod:`fusedream_ops.batch.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
