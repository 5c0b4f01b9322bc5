"""Boot entry point. On the board ``main.py`` runs at power-up with the default board;
under the unix port: ``micropython main.py --board unix_synthetic --port 0``."""

import sys

from fieldrig import app

app.main(getattr(sys, "argv", [])[1:])
