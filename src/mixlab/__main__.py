"""``python -m mixlab``: the lab's command line (see :mod:`mixlab.lab.cli`)."""
import sys

from mixlab.lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
