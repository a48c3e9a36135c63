"""What people and scrapers look at: the job events seen (`activity`), Prometheus metrics
(`metrics`), refused upgrades logged at a bounded rate (`refusals`), and the /metrics route.

The server holds one `Observation` and calls it at three points only (start, stop, a refused
upgrade), so the transport and the job code stay unaware of the views.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .activity import Activity, attach, detach
from .metrics import CONTENT_TYPE, Metrics
from .refusals import Refusals, refusal_kind


class Observation:
    """One service's activity watcher, metrics and refusal log."""

    def __init__(self, service: Any) -> None:
        self.activity = Activity()
        self.metrics = Metrics(service)
        self.activity.observers.append(self.metrics.on_event)
        self.refusals = Refusals(self.metrics.refused)

    def start(self, orphans_ended: int = 0) -> None:
        """After the event log is set up: watch the events; count the previous server's runs
        that the runner ended at start."""
        attach(self.activity)
        self.metrics.orphans_ended(orphans_ended)

    def stop(self) -> None:
        detach(self.activity)

    def refused(self, status: int, message: str, client: object, path: str) -> None:
        self.refusals.refused(status, message, client, path)


def metrics_refusal(token: str | None, authorization: str) -> JSONResponse | None:
    """/metrics' access rule: open like /health unless a metrics token is set; then a scraper
    must send `Authorization: Bearer <token>`. The 401 body says which of the two is wrong."""
    if not token:
        return None
    if authorization[:7].lower() != "bearer ":
        return JSONResponse({"error": "missing token: send 'Authorization: Bearer <metrics "
                                      "token>'"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(authorization[7:].strip().encode(), token.encode()):
        return JSONResponse({"error": "invalid token"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})
    return None


def install_metrics_route(app: FastAPI, service: Any) -> None:
    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        refused = metrics_refusal(service.settings.metrics_token,
                                  request.headers.get("authorization", ""))
        if refused is not None:
            return refused
        return Response(service.observe.metrics.render(), media_type=CONTENT_TYPE)


__all__ = ["Observation", "install_metrics_route", "metrics_refusal", "refusal_kind"]
