"""python -m fusedream_ops.clipag.finetune (see :mod:`.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
