"""HTTP on every worker (Faust's web server): /metrics, /healthz, /schemas/{name} (the
published contracts), and on serving workers GET /recommendations/{user_id}?n=10, the v1
message computed on demand."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from serving.recommender import Recommender
from streamrec.contracts.json_schemas import DOCUMENTS, document_text
from streamrec.contracts.user_update import UserUpdate
from streamrec.kernel import metrics
from streamrec.kernel.retry import TRANSIENT

MAX_N = 100
CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0]
REFUSED = {"error": "this API needs a bearer token (Authorization: Bearer ...)"}


@dataclass(frozen=True)
class Access:
    """Who may call the HTTP API: everyone without a token; with one, requests that carry
    it (``Authorization: Bearer <token>``), and everyone on /healthz and /metrics when
    ``open_health``."""

    token: str | None = None
    open_health: bool = True

    def allows(self, request: Request, health: bool = False) -> bool:
        if self.token is None or (health and self.open_health):
            return True
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def refuse(self, view: View) -> Response:
        return view.json(REFUSED, status=401, headers={"WWW-Authenticate": "Bearer"})


def install_views(app: faust.App, role: str, recommender: Recommender | None,
                  model_version: Callable[[], str | None],
                  pseudonymize: Callable[[str], str] | None = None,
                  access: Access | None = None) -> None:
    """``pseudonymize``: with pseudonymous ids, callers ask by raw id; the state is read by
    the pseudonym and the answer names the raw id they asked for. ``access``: the bearer
    token, when the API asks for one."""
    access = access or Access()
    @app.page("/metrics")
    async def metrics_view(self: View, request: Request) -> Response:
        if not access.allows(request, health=True):
            return access.refuse(self)
        # aiohttp wants the charset apart from the content type
        return self.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE)

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        if not access.allows(request, health=True):
            return access.refuse(self)
        ready = metrics.READINESS.ready
        body = {"status": "ok" if ready else "starting", "role": role,
                "model_version": model_version()}
        return self.json(body, status=200 if ready else 503)

    @app.page("/schemas/{name}")
    async def schemas(self: View, request: Request, name: str) -> Response:
        if not access.allows(request):
            return access.refuse(self)
        try:
            text = document_text(name)
        except KeyError:
            return self.json({"error": f"no schema {name!r}; one of: {', '.join(DOCUMENTS)}"},
                             status=404)
        kind = "application/yaml" if name.endswith(".yaml") else "application/schema+json"
        return self.bytes(text.encode(), content_type=kind)

    if recommender is None:
        return

    @app.page("/recommendations/{user_id}")
    async def recommendations(self: View, request: Request, user_id: str) -> Response:
        if not access.allows(request):
            return access.refuse(self)
        raw_n = request.query.get("n", "10")
        try:
            n = int(raw_n)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_N:
            return self.json({"error": f"query parameter 'n': expected an integer 1..{MAX_N}, "
                                       f"got {raw_n!r}"}, status=400)
        start = time.perf_counter()
        try:
            stored_as = pseudonymize(user_id) if pseudonymize is not None else user_id
            message = (await recommender.recommend(
                [UserUpdate(user_id=stored_as, event_id="", ts=0)], n=n))[0].to_dict()
            message["user_id"] = user_id
        except TRANSIENT:
            return self.json({"error": "redis unavailable"}, status=503)
        message["trigger"] = {"event_id": None, "ts": None}
        metrics.PULL_SECONDS.observe(time.perf_counter() - start)
        return self.json(message)
