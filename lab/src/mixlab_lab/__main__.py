"""``python -m mixlab_lab``: the ``mixlab`` command."""
import sys

from mixlab_lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
