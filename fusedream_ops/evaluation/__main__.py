"""python -m fusedream_ops.evaluation RUN [RUN ...]: the evaluation command (also installed as ``fusedream-evaluate``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
