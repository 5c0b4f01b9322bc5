"""fieldrig rig firmware (MicroPython, Raspberry Pi Pico 2 W and the unix port).

Modules are small and single-purpose; nothing here touches pins directly: a board
module (firmware/boards/) builds the drivers and transports and hands them in.
"""

FIRMWARE_VERSION = "0.1.0"
