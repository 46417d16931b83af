"""``python -m adapterscan``: the command line.

May use: ``cli``.
"""

import sys

from .cli import main

sys.exit(main())
