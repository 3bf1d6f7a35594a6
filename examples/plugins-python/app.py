"""A hookyard plugin written in Python (componentize-py).

outgoing: sends {"event": <type>, "user": <data.username or null>, "source": "python"}
          instead of the gateway's default body.
response: writes nothing back.
inbound:  the pushed JSON object becomes one record (identifiers: {"id": ...} when the body has an
          "id", else {}).
validate-config: accepts any config that is JSON.

Build: ./build.sh  ->  out/plugin.wasm
"""
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types


class Handler(exports.Handler):
    def validate_config(self, config: bytes) -> None:
        try:
            json.loads(config or b"null")
        except ValueError as e:
            raise Err(f"config is not JSON: {e}")

    def outgoing(self, config: bytes, hook: types.Webhook, ev: types.Event) -> types.OutgoingAction:
        try:
            data = json.loads(ev.data or b"null")
        except ValueError as e:
            raise Err(types.PluginError_InvalidInput(f"event data is not JSON: {e}"))
        user = data.get("username") if isinstance(data, dict) else None
        body = {"event": ev.event_type, "user": user, "source": "python"}
        log.log(log.Level.DEBUG, f"python plugin: {ev.event_type} for webhook {hook.name}")
        request = types.OutgoingRequest(
            method=None,
            path=None,
            query=None,
            headers=[("x-plugin-language", "python")],
            body=json.dumps(body, separators=(",", ":")).encode(),
            content_type="application/json",
        )
        return types.OutgoingAction_Send([request])

    def response(self, config: bytes, hook: types.Webhook, ev: types.Event, resp: types.Response):
        return None

    def inbound(self, config: bytes, hook: types.Webhook, req: types.InboundRequest):
        try:
            body = json.loads(req.body or b"null")
        except ValueError as e:
            raise Err(types.Rejection(status=400, message=f"body is not JSON: {e}"))
        if not isinstance(body, dict):
            raise Err(types.Rejection(status=422, message="body must be a JSON object"))
        identifiers = {"id": body["id"]} if "id" in body else {}
        return [
            types.InboundRecord(
                entity=None,
                identifiers=json.dumps(identifiers).encode(),
                fields=json.dumps(body).encode(),
            )
        ]
