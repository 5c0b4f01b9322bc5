"""Writer and reader for the InfluxDB 1.x HTTP API (``/write``, ``/query``).

InfluxDB 1.x, 2.x and 3.x all serve these endpoints, so this one tested client
serves all three. (influxdb-client's writer speaks only ``/api/v2/write``, which
1.x before 1.8 lacks; line protocol is produced by ``fieldrig_cloud.lineproto``.)
"""

from __future__ import annotations

from typing import Any

import httpx


class InfluxError(RuntimeError):
    """A failed request. ``status`` is the HTTP status (0: no answer at all)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (server down, overloaded,
        database missing, credentials being fixed); False when the data itself was
        refused (400 parse error / field type conflict, 413 too large)."""
        return self.status not in (400, 413, 422)


class InfluxHttp:
    def __init__(self, url: str, database: str, username: str | None = None,
                 password: str | None = None, timeout_s: float = 10.0) -> None:
        auth = (username, password or "") if username else None
        self.url = url
        self.database = database
        self._client = httpx.AsyncClient(base_url=url, auth=auth, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def ping(self) -> bool:
        try:
            r = await self._client.get("/ping")
        except httpx.HTTPError:
            return False
        return r.status_code == 204

    async def create_database(self) -> None:
        await self.query(f'CREATE DATABASE "{self.database}"', method="POST")

    async def write_lines(self, lines: list[str], rp: str | None = None) -> None:
        """Write line-protocol points (ns precision); raises InfluxError unless accepted."""
        if lines:
            await self.write_body("\n".join(lines).encode(), rp)

    async def write_body(self, body: bytes, rp: str | None = None) -> None:
        """Write a line-protocol body (lines joined by newlines, UTF-8, ns precision);
        raises InfluxError unless accepted."""
        if not body:
            return
        params = {"db": self.database, "precision": "ns"}
        if rp:
            params["rp"] = rp
        try:
            r = await self._client.post("/write", params=params, content=body)
        except httpx.HTTPError as exc:
            raise InfluxError(f"write failed: {exc!r}") from exc
        if r.status_code != 204:
            raise InfluxError(f"write rejected ({r.status_code}): {r.text.strip()}",
                              r.status_code)

    async def query_all(self, q: str, method: str = "GET") -> list[list[dict[str, Any]]]:
        """Run InfluxQL (one or more ``;``-separated statements); series per statement."""
        params = {"db": self.database, "q": q, "epoch": "ns"}
        try:
            if method == "POST":
                r = await self._client.post("/query", params=params)
            else:
                r = await self._client.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise InfluxError(f"query failed: {exc!r}") from exc
        if r.status_code != 200:
            raise InfluxError(f"query rejected ({r.status_code}): {r.text.strip()}",
                              r.status_code)
        out: list[list[dict[str, Any]]] = []
        for result in r.json().get("results", []):
            if "error" in result:
                raise InfluxError(result["error"], 400)
            out.append(result.get("series", []))
        return out

    async def query(self, q: str, method: str = "GET") -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement."""
        results = await self.query_all(q, method)
        return results[0] if results else []

    async def rows(self, q: str) -> list[dict[str, Any]]:
        """The first statement's rows as dicts (series tags merged into each row)."""
        out: list[dict[str, Any]] = []
        for s in await self.query(q):
            cols = s["columns"]
            tags = s.get("tags", {})
            for values in s["values"]:
                out.append({**tags, **dict(zip(cols, values, strict=True))})
        return out


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
