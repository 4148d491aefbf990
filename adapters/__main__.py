"""``python -m adapters``: the same command line as ``kling-bot``."""

import sys

from adapters.cli import main

sys.exit(main())
