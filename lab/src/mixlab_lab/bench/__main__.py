"""``python -m mixlab_lab.bench``: the same as ``mixlab bench``."""
import sys

from . import main

sys.exit(main())
