"""The MQTT v5 topic tree and payload schema the gateway publishes (contract: docs/mqtt.md).

    fieldrig/v1/{site}/{rig}/telemetry   samples, QoS 1, JSON, schema 1
    fieldrig/v1/{site}/{rig}/events      rig events, QoS 1
    fieldrig/v1/{site}/{rig}/eis         EIS spectra, QoS 1
    fieldrig/v1/{site}/{rig}/status      retained rig status
    fieldrig/v1/{site}/{rig}/cmd         command requests (response topic + correlation data)
    fieldrig/v1/{site}/gateway/{gw}/status   retained gateway status, last will "offline"
"""

from __future__ import annotations

import re

TOPIC_ROOT = "fieldrig/v1"
SCHEMA_VERSION = 1

# Topic levels must not contain MQTT wildcards or separators; keep ids simple.
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_id(kind: str, value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{kind} id {value!r} must match {_ID.pattern}")
    return value


def rig_topic(site: str, rig: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{check_id('site', site)}/{check_id('rig', rig)}/{leaf}"


def gateway_topic(site: str, gateway: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{check_id('site', site)}/gateway/{check_id('gateway', gateway)}/{leaf}"
