"""Typed helpers for hookyard plugins written in Python (componentize-py).

Subclass :class:`Plugin` as ``Handler`` in your app module and override the hooks you need;
the others pass data through (the gateway's default envelope, nothing written back, the pushed
JSON object as one record)::

    from hookyard_plugin import Plugin, Event, InvalidInput, request, send

    class Handler(Plugin):
        def on_outgoing(self, config, hook, event: Event):
            email = event.data.get("email")
            if email is None:
                raise InvalidInput("the event has no email")
            return send(request({"mail": email, "kind": event.type}))

Errors: raise :class:`InvalidInput` (the event or push does not fit) or :class:`InvalidConfig`
(the webhook's plugin config does not fit); they become the ``invalid-input`` and
``invalid-config`` errors of the WIT, which the gateway records with the webhook's ``on_error``
policy. Any other exception is a bug: it is not caught, its traceback goes to stderr, the call
traps, and the gateway shows the traceback in ``plugin check``, the upload's error, the Webhook
Log and its own log.

JSON: payloads cross the boundary as bytes. ``event.data``, ``event.context`` and the config are
parsed for you (``None`` for empty bytes); bodies given as a dict or list are written as compact
JSON in the order you built them.

Warm instances: the gateway reuses an instance for many calls of one webhook, so module-level
state persists between calls (never between webhooks). The parsed config is cached by its bytes:
a webhook's config is parsed once, and again only when it changes. Treat it as read-only (the
same object is passed to every call). What a call prints is flushed when the call returns, so it
shows with that call's output.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log as _log
from wit_world.imports import types

__all__ = [
    "Plugin",
    "Event",
    "Webhook",
    "Response",
    "InboundRequest",
    "Record",
    "InvalidInput",
    "InvalidConfig",
    "Rejected",
    "request",
    "send",
    "skip",
    "envelope",
    "default_body",
    "to_json",
    "from_json",
    "snake_case",
    "camel_case",
    "pascal_case",
    "kebab_case",
    "convert_keys",
    "log",
]

Json = Any
Body = Union[bytes, str, Mapping[str, Any], Sequence[Any], None]
Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]], None]


# --- errors --------------------------------------------------------------------------------------

class InvalidInput(Exception):
    """The event (or the third party's answer) does not fit: ``invalid-input``."""


class InvalidConfig(Exception):
    """The webhook's plugin config does not fit: ``invalid-config``."""


class Rejected(Exception):
    """Refuses an inbound push; the caller gets ``status`` (4xx) and ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- JSON ----------------------------------------------------------------------------------------

def to_json(value: Json) -> bytes:
    """Compact JSON bytes, keys in insertion order, non-ASCII kept as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def from_json(data: bytes, what: str = "input") -> Json:
    """Parses JSON bytes (empty: ``None``); malformed JSON is :class:`InvalidInput`."""
    if not data or not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        raise InvalidInput(f"{what} is not JSON: {e}") from None


# --- the config, parsed once per instance --------------------------------------------------------

_config_bytes: Optional[bytes] = None
_config_value: Json = None


def _config(data: bytes) -> Json:
    """The webhook's config, parsed; the last one parsed is kept by its bytes (an instance serves
    one webhook, so it is parsed once unless the config changes). A config that is not JSON is
    not kept: it fails again on the next call."""
    global _config_bytes, _config_value
    data = bytes(data)
    if data != _config_bytes:
        _config_value = from_json(data, "the config")
        _config_bytes = data
    return _config_value


def _flush() -> None:
    """Writes out what the call printed, so it is not seen as the next call's output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not fail the call
            pass


# --- views of the WIT records --------------------------------------------------------------------

@dataclass(frozen=True)
class Webhook:
    """The webhook a call is made for."""

    id: str
    name: str
    url: str
    method: str


@dataclass(frozen=True)
class Event:
    """An internal event, its ``data`` and ``context`` parsed."""

    id: str
    type: str
    occurred_at: str
    data: Json
    context: Json
    raw_data: bytes
    raw_context: bytes


class _HasBody:
    """``header(name)`` (case-insensitive) and ``json()`` for a record with headers and body."""

    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Json:
        return from_json(self.body, "the body")


@dataclass(frozen=True)
class Response(_HasBody):
    """The third party's answer; ``json()`` parses the body."""

    status: int
    headers: List[Tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class InboundRequest(_HasBody):
    """A third party's push; ``json()`` parses the body."""

    method: str
    path: str
    query: str
    headers: List[Tuple[str, str]]
    body: bytes
    content_type: Optional[str]


@dataclass
class Record:
    """One internal record made of an inbound push."""

    fields: Mapping[str, Any]
    identifiers: Mapping[str, Any] = None  # type: ignore[assignment]
    entity: Optional[str] = None


def _webhook(hook: types.Webhook) -> Webhook:
    return Webhook(hook.id, hook.name, hook.url, hook.method)


def _event(ev: types.Event) -> Event:
    return Event(
        id=ev.id,
        type=ev.event_type,
        occurred_at=ev.occurred_at,
        data=from_json(ev.data, "event data"),
        context=from_json(ev.context, "event context"),
        raw_data=bytes(ev.data),
        raw_context=bytes(ev.context),
    )


# --- building outputs ----------------------------------------------------------------------------

def _body(body: Body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return to_json(body)


def _headers(headers: Headers) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]


def request(
    body: Body,
    *,
    method: Optional[str] = None,
    path: Optional[str] = None,
    query: Optional[str] = None,
    headers: Headers = None,
    content_type: Optional[str] = None,
) -> types.OutgoingRequest:
    """A request to the webhook's URL. ``body``: bytes or str as is, anything else as JSON.
    ``method``, ``path`` (appended to the URL's path) and ``query`` override the webhook's."""
    return types.OutgoingRequest(
        method=method,
        path=path,
        query=query,
        headers=_headers(headers),
        body=_body(body),
        content_type=content_type,
    )


def send(*requests: types.OutgoingRequest) -> types.OutgoingAction:
    """Send these requests (several: fan out)."""
    return types.OutgoingAction_Send(list(requests))


def skip(reason: str) -> types.OutgoingAction:
    """Send nothing; the reason is recorded in the Webhook Log."""
    return types.OutgoingAction_Skip(reason)


def envelope(event: Event) -> Dict[str, Any]:
    """The gateway's default body as a dict: ``{"type", "timestamp", "data", "context"}``."""
    return {
        "type": event.type,
        "timestamp": event.occurred_at,
        "data": event.data,
        "context": event.context,
    }


def default_body(event: Event) -> bytes:
    """The gateway's default body, as the gateway would write it."""
    return to_json(envelope(event))


# --- case conversions ----------------------------------------------------------------------------

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z0-9])|[A-Z]?[a-z0-9]+|[A-Z]+|[0-9]+")


def _words(name: str) -> List[str]:
    return [w.lower() for w in _WORDS.findall(name)]


def snake_case(name: str) -> str:
    """``firstName``, ``first-name``, ``FirstName`` -> ``first_name``."""
    return "_".join(_words(name))


def kebab_case(name: str) -> str:
    """-> ``first-name``."""
    return "-".join(_words(name))


def camel_case(name: str) -> str:
    """-> ``firstName``."""
    words = _words(name)
    return words[0] + "".join(w.capitalize() for w in words[1:]) if words else ""


def pascal_case(name: str) -> str:
    """-> ``FirstName``."""
    return "".join(w.capitalize() for w in _words(name))


def convert_keys(value: Json, convert: Callable[[str], str]) -> Json:
    """``value`` with every object key converted, at every depth."""
    if isinstance(value, dict):
        return {convert(k): convert_keys(v, convert) for k, v in value.items()}
    if isinstance(value, list):
        return [convert_keys(v, convert) for v in value]
    return value


# --- logging -------------------------------------------------------------------------------------

class log:
    """The gateway's log (bounded: long messages are cut, a call's total is capped)."""

    @staticmethod
    def debug(message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _log.log(_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _log.log(_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _log.log(_log.Level.ERROR, message)


# --- the plugin ----------------------------------------------------------------------------------

def _plugin_error(e: Exception) -> Err:
    if isinstance(e, InvalidConfig):
        return Err(types.PluginError_InvalidConfig(str(e)))
    return Err(types.PluginError_InvalidInput(str(e)))


class Plugin(exports.Handler):
    """A hookyard plugin. Override the ``on_*`` hooks you need; the others pass data through.
    ``config`` is the webhook's plugin config, parsed (``None`` when there is none)."""

    # Hooks ---------------------------------------------------------------------------------------

    def on_validate_config(self, config: Json) -> None:
        """Raise :class:`InvalidConfig` to refuse a config. Default: any config."""

    def on_outgoing(self, config: Json, hook: Webhook, event: Event) -> types.OutgoingAction:
        """An event becomes the request(s) to send. Default: the gateway's envelope."""
        return send(request(default_body(event)))

    def on_response(
        self, config: Json, hook: Webhook, event: Event, response: Response
    ) -> Optional[Mapping[str, Any]]:
        """The third party's answer becomes fields to write back to the internal system;
        ``None``: nothing. Called only for webhooks with a ``writeback`` section, after a
        successful delivery (every request answered 2xx), with the answer to the last request
        sent (a fan-out's last). Default: nothing."""
        return None

    def on_inbound(
        self, config: Json, hook: Webhook, req: InboundRequest
    ) -> List[Record]:
        """A push becomes internal records; raise :class:`Rejected` to refuse it.
        Default: the pushed JSON object is one record of the webhook's entity."""
        body = req.json()
        if not isinstance(body, dict):
            raise Rejected(422, "body must be a JSON object")
        return [Record(fields=body)]

    # The WIT exports (do not override) ----------------------------------------------------------

    def validate_config(self, config: bytes) -> None:
        try:
            self.on_validate_config(from_json(config, "the config"))
        except (InvalidConfig, InvalidInput) as e:
            raise Err(str(e)) from None
        finally:
            _flush()

    def outgoing(self, config: bytes, hook: types.Webhook, ev: types.Event) -> types.OutgoingAction:
        try:
            return self.on_outgoing(_config(config), _webhook(hook), _event(ev))
        except (InvalidInput, InvalidConfig) as e:
            raise _plugin_error(e) from None
        finally:
            _flush()

    def response(
        self, config: bytes, hook: types.Webhook, ev: types.Event, resp: types.Response
    ) -> Optional[bytes]:
        try:
            fields = self.on_response(
                _config(config),
                _webhook(hook),
                _event(ev),
                Response(resp.status, list(resp.headers), bytes(resp.body)),
            )
        except (InvalidInput, InvalidConfig) as e:
            raise _plugin_error(e) from None
        finally:
            _flush()
        return None if fields is None else to_json(fields)

    def inbound(
        self, config: bytes, hook: types.Webhook, req: types.InboundRequest
    ) -> List[types.InboundRecord]:
        try:
            records = self.on_inbound(
                _config(config),
                _webhook(hook),
                InboundRequest(
                    req.method, req.path, req.query, list(req.headers), bytes(req.body),
                    req.content_type,
                ),
            )
        except Rejected as e:
            raise Err(types.Rejection(status=e.status, message=e.message)) from None
        except (InvalidInput, InvalidConfig) as e:
            raise Err(types.Rejection(status=422, message=str(e))) from None
        finally:
            _flush()
        return [
            types.InboundRecord(
                entity=r.entity,
                identifiers=to_json(dict(r.identifiers or {})),
                fields=to_json(dict(r.fields)),
            )
            for r in records
        ]
