"""``python -m mixlab.bench``: the same as ``mixlab bench``."""
import sys

from . import main

sys.exit(main())
