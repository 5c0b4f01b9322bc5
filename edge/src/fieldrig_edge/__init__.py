"""fieldrig edge gateway.

Owns the bench side of the pipeline: talks the link protocol to each rig (serial or
TCP), spools everything in SQLite before acknowledging it, maps rig clocks to UTC,
publishes to the MQTT v5 topic tree and forwards validated commands back to the rigs.
Operations: docs/edge.md; topic tree and payloads: docs/mqtt.md.
"""

__version__ = "0.2.0"
