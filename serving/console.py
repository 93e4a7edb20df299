"""The web console on serving workers: look up a user, see their recent items and their
list, and "try it": click an item and watch the list change.

``GET /console`` is one static page (``console.html``) that calls the worker's own API:
``GET /users/{user_id}`` (the user's state), ``GET /recommendations/{user_id}`` (the list,
computed on demand) and, when ``serving.console_try_it`` is on, ``POST /events`` (publishes
one event to its input topic, keyed by user, as any producer would; the worker then applies
it like every other event).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from serving.web import Access
from streamrec.contracts.event import decode_event
from streamrec.kernel.errors import InvalidEvent
from streamrec.kernel.retry import TRANSIENT

# the user's state for people, or None when the user has none
Profile = Callable[[str], Awaitable[dict[str, Any] | None]]
# publish one event: (its type, key, value)
Publish = Callable[[str, bytes, bytes], Awaitable[None]]
MAX_BODY_BYTES = 4096


@cache
def page() -> bytes:
    return resources.files("serving").joinpath("console.html").read_bytes()


def event_from_request(body: bytes, now_ms: int) -> tuple[str, bytes]:
    """The event a console request asks for (``user_id``, ``item_id``, ``type``): its type
    and message value, a fresh id and the server's time; :class:`InvalidEvent` names the
    field at fault."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidEvent("too_large", "", f"request body over {MAX_BODY_BYTES} bytes")
    try:
        asked = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidEvent("not_json", "", "request body is not JSON") from None
    if not isinstance(asked, dict):
        raise InvalidEvent("not_object", "", "request body is not a JSON object")
    value = orjson.dumps({"event_id": f"console-{uuid.uuid4().hex}", "ts": now_ms,
                          **{k: asked.get(k) for k in ("user_id", "item_id", "type")}})
    event = decode_event(value)
    return event.type, value


def install_console(app: faust.App, profile: Profile, publish: Publish | None,
                    pseudonymize: Callable[[str], str] | None = None,
                    access: Access | None = None) -> None:
    """The page is static and open; its API calls carry the token (the page reads it from
    its URL's fragment, ``/console#token=...``, which browsers never send)."""
    guard = access or Access()
    @app.page("/console")
    async def console(self: View, request: Request) -> Response:
        return self.bytes(page(), content_type="text/html")

    @app.page("/users/{user_id}")
    async def user(self: View, request: Request, user_id: str) -> Response:
        if not guard.allows(request):
            return guard.refuse(self)
        try:
            found = await profile(pseudonymize(user_id) if pseudonymize else user_id)
        except TRANSIENT:
            return self.json({"error": "redis unavailable"}, status=503)
        if found is None:
            return self.json({"error": f"no state for user {user_id!r}"}, status=404)
        return self.json({**found, "user_id": user_id, "try_it": publish is not None})

    @app.page("/events")
    class Events(View):  # type: ignore[misc]
        async def post(self, request: Request) -> Response:
            if not guard.allows(request):
                return guard.refuse(self)
            if publish is None:
                return self.json({"error": "publishing from the console is off "
                                           "(STREAMREC_SERVING__CONSOLE_TRY_IT=true)"},
                                 status=403)
            try:
                kind, value = event_from_request(await request.read(),
                                                 int(time.time() * 1000))
            except InvalidEvent as err:
                return self.json({"error": str(err), "field": err.field}, status=400)
            body = orjson.loads(value)
            await publish(kind, body["user_id"].encode(), value)
            return self.json({"event_id": body["event_id"], "ts": body["ts"]}, status=202)
