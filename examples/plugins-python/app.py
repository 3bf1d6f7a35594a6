"""A hookyard plugin written in Python (componentize-py), with the helpers of sdk/python.

outgoing: sends {"event": <type>, "user": <data.username or null>, "source": "python"}
          instead of the gateway's default body, with an `x-plugin-language` header; with
          {"include_data": true} as the webhook's config, the event's data too, under "data".
response: writes nothing back (the helper's default).
inbound:  the pushed JSON object becomes one record (identifiers: {"id": ...} when the body has an
          "id", else {}).
validate-config: accepts any config that is JSON (the helper parses it).

Build: ./build.sh  ->  out/plugin.wasm
"""
from hookyard_plugin import Plugin, Record, Rejected, log, request, send


class Handler(Plugin):
    def on_outgoing(self, config, hook, event):
        user = event.data.get("username") if isinstance(event.data, dict) else None
        log.debug(f"python plugin: {event.type} for webhook {hook.name}")
        body = {"event": event.type, "user": user, "source": "python"}
        if isinstance(config, dict) and config.get("include_data"):
            body["data"] = event.data
        return send(request(body, headers={"x-plugin-language": "python"}, content_type="application/json"))

    def on_inbound(self, config, hook, req):
        body = req.json()
        if not isinstance(body, dict):
            raise Rejected(422, "body must be a JSON object")
        identifiers = {"id": body["id"]} if "id" in body else {}
        return [Record(fields=body, identifiers=identifiers)]
