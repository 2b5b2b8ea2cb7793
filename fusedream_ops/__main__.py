"""python -m fusedream_ops "a photo of a blue dog" -o out.png: the FuseDream command (code in :mod:`.fusedream.cli`)."""
import sys

from .fusedream.cli import main

if __name__ == "__main__":
    sys.exit(main())
