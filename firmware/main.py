"""Boot entry point. On the board ``main.py`` runs at power-up with the default board;
under the unix port: ``micropython main.py --board unix_synthetic --port 0``."""

import sys

from fieldrig import app

argv = getattr(sys, "argv", [])[1:]
if sys.platform == "rp2" and "--board" not in argv:
    argv = ["--board", "pico2w"] + argv  # the Pico 2 W (its drivers, its watchdog)
app.main(argv)
