"""fieldrig edge gateway.

Owns the bench side of the pipeline: talks the link protocol to each rig (serial or
TCP), maps rig clocks to UTC and publishes telemetry to the MQTT v5 topic tree;
commands flow back the other way.
"""
