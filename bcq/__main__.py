"""``python -m bcq`` is the ``bcq`` command."""
import sys

from .cli import main

sys.exit(main())
