"""fieldrig cloud side.

Owns everything after the broker: the ingester that turns MQTT telemetry into
InfluxDB points, the InfluxDB schema, analytics, and the ``fieldrig`` CLI.
"""
