"""fieldrig hardware-in-the-loop bench.

Owns what the rest of the system is tested against: the simulated solid-state cell
(`fieldrig_hil.cell`), the launcher for private Mosquitto / InfluxDB / MicroPython
processes (`fieldrig_hil.services`), and the demo (`fieldrig_hil.demo`).
"""
