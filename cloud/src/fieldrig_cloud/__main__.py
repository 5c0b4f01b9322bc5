"""``python -m fieldrig_cloud ...`` is the ``fieldrig`` command."""

import sys

from fieldrig_cloud.cli import main

sys.exit(main())
