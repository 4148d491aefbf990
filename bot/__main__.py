"""``python -m bot``: the same command line as ``kling-bot``.

The command line lives with the adapters because it wires them to the core; this
entry point is the one place ``bot`` reaches up to them.
"""

import sys

from adapters.cli import main

sys.exit(main())
