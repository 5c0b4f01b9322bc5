"""Structured logs: one JSON object per line (or plain text), secrets masked.

Every record carries its ``extra`` fields as JSON keys, so journald / Loki queries can
filter on ``rig``, ``boot``, ``error``... The broker password is masked wherever it
appears, in the message or any field, as a second fence behind ``BrokerConfig``
keeping it out of ``repr``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
MASK = "***"


class _Redactor:
    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, MASK)
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(out, default=str, separators=(",", ":")))


class TextFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.redact = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items()
                 if k not in _STANDARD and not k.startswith("_")}
        if extra:
            line += " " + json.dumps(extra, default=str, separators=(",", ":"))
        return self.redact(line)


def setup(level: str = "INFO", fmt: str = "json", secrets: Iterable[str | None] = (),
          stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # paho's packet-level chatter only when asked for explicitly.
    logging.getLogger("fieldrig.edge.mqtt").setLevel(max(logging.getLevelName(level),
                                                         logging.INFO))
