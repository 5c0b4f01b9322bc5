"""Writer and reader for the InfluxDB 1.x HTTP API (``/write``, ``/query``).

InfluxDB 1.x, 2.x and 3.x all serve these endpoints, so this one tested client
serves all three. (influxdb-client's writer speaks only ``/api/v2/write``, which
1.x before 1.8 lacks; we use it for line protocol and plain HTTP for transport.)
"""

from __future__ import annotations

from typing import Any

import httpx


class InfluxError(RuntimeError):
    pass


class InfluxHttp:
    def __init__(self, url: str, database: str, username: str | None = None,
                 password: str | None = None, timeout_s: float = 10.0) -> None:
        auth = (username, password or "") if username else None
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

    async def write_lines(self, lines: list[str]) -> None:
        """Write line-protocol points (ns precision); raises InfluxError unless accepted."""
        if not lines:
            return
        try:
            r = await self._client.post(
                "/write",
                params={"db": self.database, "precision": "ns"},
                content="\n".join(lines).encode(),
            )
        except httpx.HTTPError as exc:
            raise InfluxError(f"write failed: {exc}") from exc
        if r.status_code != 204:
            raise InfluxError(f"write rejected ({r.status_code}): {r.text.strip()}")

    async def query(self, q: str, method: str = "GET") -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement."""
        params = {"db": self.database, "q": q, "epoch": "ns"}
        try:
            if method == "POST":
                r = await self._client.post("/query", params=params)
            else:
                r = await self._client.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise InfluxError(f"query failed: {exc}") from exc
        if r.status_code != 200:
            raise InfluxError(f"query rejected ({r.status_code}): {r.text.strip()}")
        body = r.json()
        result = body.get("results", [{}])[0]
        if "error" in result:
            raise InfluxError(result["error"])
        series: list[dict[str, Any]] = result.get("series", [])
        return series
