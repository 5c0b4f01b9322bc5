"""``python -m fieldrig_edge``: the same as the ``fieldrig-edge`` command."""

import sys

from fieldrig_edge.cli import main

sys.exit(main())
