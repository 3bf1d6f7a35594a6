"""{{name}}: a hookyard plugin. Build: `hookyard plugin build`; test: `hookyard plugin test`.

Hooks not overridden here pass data through (hookyard_plugin.Plugin's defaults: the gateway's
envelope, nothing written back, the pushed JSON object as one record).
"""

from hookyard_plugin import InvalidInput, Plugin, Record, Rejected, log, request, send


class Handler(Plugin):
    # >> outgoing
    def on_outgoing(self, config, hook, event):
        """The event becomes one JSON request: its type, the user's id and email."""
        if not isinstance(event.data, dict):
            raise InvalidInput("event data must be a JSON object")
        log.debug(f"{{name}}: {event.type} for {hook.name}")
        return send(
            request({"type": event.type, "user_id": event.data.get("id"), "email": event.data.get("email")})
        )
    # << outgoing
    # >> response

    def on_response(self, config, hook, event, response):
        """A 2xx answer's `id` is written back as `remote_id`; other answers write nothing."""
        if not 200 <= response.status < 300:
            return None
        body = response.json()
        if isinstance(body, dict) and "id" in body:
            return {"remote_id": body["id"]}
        return None
    # << response
    # >> inbound

    def on_inbound(self, config, hook, req):
        """A pushed JSON object becomes one record, identified by its `id`."""
        body = req.json()
        if not isinstance(body, dict):
            raise Rejected(422, "body must be a JSON object")
        if "id" not in body:
            raise Rejected(422, "body has no id")
        return [Record(fields=body, identifiers={"id": body["id"]})]
    # << inbound
