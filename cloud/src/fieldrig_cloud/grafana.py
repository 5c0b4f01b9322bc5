"""Publish dashboards, datasource, alert rules and event annotations to a running
Grafana through its HTTP API (grafana-client).

The request bodies are built by pure functions (``*_payload``), tested on their own;
``publish`` only sends them, create-or-update by uid, so it can run repeatedly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fieldrig_cloud import dashboards


def datasource_payload(influx_url: str, database: str = "fieldrig") -> dict[str, Any]:
    ds: dict[str, Any] = dict(dashboards.datasource_provisioning(influx_url, database)
                              ["datasources"][0])
    ds.pop("editable", None)  # a provisioning-file key, not an API field
    return ds


def dashboard_payloads() -> list[dict[str, Any]]:
    """POST /api/dashboards/db bodies: overwrite by uid, into the fieldrig folder."""
    return [{"dashboard": dashboards.dashboard_json(make()), "folderUid": dashboards.FOLDER_UID,
             "overwrite": True, "message": "fieldrig dashboards publish"}
            for make in dashboards.DASHBOARDS.values()]


def alert_rule_payloads() -> list[dict[str, Any]]:
    return dashboards.alert_rules_json()


def annotation_payloads(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from fieldrig_cloud.analytics import events_to_annotations

    return events_to_annotations(events)


def connect(url: str, token: str | None = None, user: str | None = None,
            password: str | None = None) -> Any:
    from grafana_client.api import GrafanaApi

    credential: str | tuple[str, str] | None = token
    if credential is None and user:
        credential = (user, password or "")
    return GrafanaApi.from_url(url, credential=credential)


def _exists(call: Any, *args: Any) -> bool:
    from grafana_client.client import GrafanaClientError

    try:
        call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise
    return True


def publish(api: Any, influx_url: str, database: str = "fieldrig") -> Iterator[str]:
    """Folder, datasource, dashboards, alert rules; yields one line per object."""
    if not _exists(api.folder.get_folder, dashboards.FOLDER_UID):
        api.folder.create_folder(dashboards.FOLDER_TITLE, uid=dashboards.FOLDER_UID)
    yield f"folder {dashboards.FOLDER_UID}"
    ds = datasource_payload(influx_url, database)
    if _exists(api.datasource.get_datasource_by_uid, ds["uid"]):
        api.datasource.update_datasource_by_uid(ds["uid"], ds)
    else:
        api.datasource.create_datasource(ds)
    yield f"datasource {ds['uid']} -> {influx_url}"
    for body in dashboard_payloads():
        api.dashboard.update_dashboard(body)
        yield f"dashboard {body['dashboard']['uid']}"
    for rule in alert_rule_payloads():
        if _exists(api.alertingprovisioning.get_alertrule, rule["uid"]):
            api.alertingprovisioning.update_alertrule(rule["uid"], rule)
        else:
            api.alertingprovisioning.create_alertrule(rule)
        yield f"alert rule {rule['uid']}"


def annotate(api: Any, events: list[dict[str, Any]]) -> int:
    for a in annotation_payloads(events):
        api.annotations.add_annotation(dashboard_uid=a["dashboardUID"], time_from=a["time"],
                                       tags=a["tags"], text=a["text"])
    return len(events)
