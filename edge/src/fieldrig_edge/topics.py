"""The MQTT v5 topic tree and payload schema the gateway publishes (contract: docs/mqtt.md).

    fieldrig/v1/{site}/{rig}/telemetry   samples, QoS 1, JSON, schema 1
    fieldrig/v1/{site}/{rig}/impedance   impedance points, QoS 1
    fieldrig/v1/{site}/{rig}/events      rig events, QoS 1
    fieldrig/v1/{site}/{rig}/eis         EIS spectra, QoS 1
    fieldrig/v1/{site}/{rig}/status      retained rig status
    fieldrig/v1/{site}/{rig}/actuators   actuator state (set-points, duty), QoS 1, polled
    fieldrig/v1/{site}/{rig}/stored/{boot}  retained: what the ingesters stored (from them)
    fieldrig/v1/{site}/{rig}/cmd         command requests (response topic + correlation data)
    fieldrig/v1/{site}/gateway/{gw}/status   retained gateway status, last will "offline"
    fieldrig/v1/{site}/gateway/{gw}/health   retained gateway + per-rig health
    fieldrig/v1/{site}/gateway/{gw}/witness  the gateway's own delivery-witness markers
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


def command_filter(site: str) -> str:
    """Commands for every rig of the site: unknown rigs get an ``unknown_rig`` error."""
    return f"{TOPIC_ROOT}/{check_id('site', site)}/+/cmd"


def parse_command_topic(site: str, topic: str) -> str | None:
    """The rig id of a ``.../{rig}/cmd`` topic of this site, else None."""
    parts = topic.split("/")
    if (len(parts) == 5 and "/".join(parts[:2]) == TOPIC_ROOT and parts[2] == site
            and parts[4] == "cmd"):
        return parts[3]
    return None


def parse_stored_topic(site: str, topic: str) -> tuple[str, int] | None:
    """(rig, boot) of a ``.../{rig}/stored/{boot}`` topic of this site, else None."""
    parts = topic.split("/")
    if (len(parts) == 6 and "/".join(parts[:2]) == TOPIC_ROOT and parts[2] == site
            and parts[4] == "stored" and parts[5].isdigit()):
        return parts[3], int(parts[5])
    return None


def valid_publish_topic(topic: object) -> bool:
    """A topic a response may be published to: no wildcards, no NUL, not empty."""
    return (isinstance(topic, str) and 0 < len(topic.encode()) <= 1024
            and not any(c in topic for c in "+#\x00") and not topic.startswith("$"))
