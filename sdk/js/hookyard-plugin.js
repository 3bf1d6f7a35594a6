// Typed helpers for hookyard plugins written in JavaScript (componentize-js).
// Types: hookyard-plugin.d.ts.
//
//   import { definePlugin, request, send, InvalidInput } from './hookyard-plugin.js';
//   export const handler = definePlugin({
//     outgoing(config, hook, event) {
//       if (!event.data.email) throw new InvalidInput('the event has no email');
//       return send(request({ mail: event.data.email, kind: event.type }));
//     },
//   });
//
// Warm instances: the gateway reuses an instance for many calls of one webhook, so module-level
// state persists between calls (never between webhooks). The parsed config is cached by its
// text: a webhook's config is parsed once, and again only when it changes. Treat it as
// read-only (the same object is passed to every call).
//
// Errors: throw InvalidInput or InvalidConfig (the WIT's invalid-input / invalid-config
// errors, handled by the webhook's on_error policy), or Rejected(status, message) to refuse an
// inbound push. Any other exception is a bug: its message and stack are written to stderr and
// the call traps; the gateway shows them in `plugin check`, the upload's error, the Webhook Log
// and its own log.

import { log as hostLog } from 'hookyard:plugin/log@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class InvalidInput extends Error {}
export class InvalidConfig extends Error {}
export class Rejected extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Compact JSON bytes, keys in insertion order. */
export const toJson = (value) => encoder.encode(JSON.stringify(value));

const parseText = (text, what) => {
  if (!text.trim()) return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InvalidInput(`${what} is not JSON: ${e.message}`);
  }
};

/** Parses JSON bytes (empty: null); malformed JSON is InvalidInput. */
export function fromJson(bytes, what = 'input') {
  return parseText(bytes && bytes.length ? decoder.decode(bytes) : '', what);
}

// The last config parsed, by its text (decoding is native and cheap; parsing is not). An
// instance serves one webhook, so its config is parsed once unless it changes; a config that is
// not JSON is not kept.
let configText = null;
let configValue = null;
const configOf = (bytes) => {
  const text = bytes && bytes.length ? decoder.decode(bytes) : '';
  if (text !== configText) {
    configValue = parseText(text, 'the config');
    configText = text;
  }
  return configValue;
};

const bodyBytes = (body) => {
  if (body === undefined || body === null) return new Uint8Array();
  if (body instanceof Uint8Array) return body;
  if (typeof body === 'string') return encoder.encode(body);
  return toJson(body);
};

const headerPairs = (headers) => {
  if (!headers) return [];
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  return entries.map(([k, v]) => [String(k), String(v)]);
};

/** A request to the webhook's URL; a body that is not bytes or a string is sent as JSON. */
export function request(body, { method, path, query, headers, contentType } = {}) {
  return { method, path, query, headers: headerPairs(headers), body: bodyBytes(body), contentType };
}

/** Send these requests (several: fan out). */
export const send = (...requests) => ({ tag: 'send', val: requests });

/** Send nothing; the reason is recorded in the Webhook Log. */
export const skip = (reason) => ({ tag: 'skip', val: String(reason) });

/** The gateway's default body as an object: {type, timestamp, data, context}. */
export const envelope = (event) => ({
  type: event.type,
  timestamp: event.occurredAt,
  data: event.data,
  context: event.context,
});

const words = (name) =>
  String(name).match(/[A-Z]+(?=[A-Z][a-z0-9])|[A-Z]?[a-z0-9]+|[A-Z]+|[0-9]+/g)?.map((w) => w.toLowerCase()) ?? [];
const cap = (w) => w.charAt(0).toUpperCase() + w.slice(1);

export const snakeCase = (name) => words(name).join('_');
export const kebabCase = (name) => words(name).join('-');
export const camelCase = (name) => words(name).map((w, i) => (i ? cap(w) : w)).join('');
export const pascalCase = (name) => words(name).map(cap).join('');

/** `value` with every object key converted, at every depth. */
export function convertKeys(value, convert) {
  if (Array.isArray(value)) return value.map((v) => convertKeys(v, convert));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [convert(k), convertKeys(v, convert)]));
  }
  return value;
}

/** The gateway's log (bounded: long messages are cut, a call's total is capped). */
export const log = {
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
};

const toEvent = (ev) => ({
  id: ev.id,
  type: ev.eventType,
  occurredAt: ev.occurredAt,
  data: fromJson(ev.data, 'event data'),
  context: fromJson(ev.context, 'event context'),
  rawData: ev.data,
});

const toRequest = (req) => ({
  method: req.method,
  path: req.path,
  query: req.query,
  headers: req.headers,
  body: req.body,
  contentType: req.contentType,
  header: (name) => req.headers.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1],
  json: () => fromJson(req.body, 'the body'),
});

// A bug (not one of the errors above): its stack to stderr, then the call traps with it.
function bug(e) {
  console.error(e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : `uncaught: ${String(e)}`);
  throw e;
}

const pluginError = (e) => {
  if (e instanceof InvalidConfig) return { tag: 'invalid-config', val: e.message };
  if (e instanceof InvalidInput) return { tag: 'invalid-input', val: e.message };
  return bug(e);
};

/**
 * The component's `handler` export from the hooks you write; the others pass data through
 * (the gateway's envelope, nothing written back, the pushed JSON object as one record).
 */
export function definePlugin(hooks) {
  return {
    validateConfig(config) {
      try {
        hooks.validateConfig?.(fromJson(config, 'the config'));
      } catch (e) {
        if (e instanceof InvalidConfig || e instanceof InvalidInput) throw e.message;
        bug(e);
      }
    },
    outgoing(config, hook, ev) {
      try {
        const event = toEvent(ev);
        if (!hooks.outgoing) return send(request(envelope(event)));
        return hooks.outgoing(configOf(config), hook, event);
      } catch (e) {
        throw pluginError(e);
      }
    },
    response(config, hook, ev, resp) {
      try {
        if (!hooks.response) return undefined;
        const answer = {
          status: resp.status,
          headers: resp.headers,
          body: resp.body,
          header: (name) => resp.headers.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1],
          json: () => fromJson(resp.body, 'the response body'),
        };
        const fields = hooks.response(configOf(config), hook, toEvent(ev), answer);
        return fields === undefined || fields === null ? undefined : toJson(fields);
      } catch (e) {
        throw pluginError(e);
      }
    },
    inbound(config, hook, req) {
      try {
        const request = toRequest(req);
        let records;
        if (hooks.inbound) {
          records = hooks.inbound(configOf(config), hook, request);
        } else {
          const body = request.json();
          if (body === null || typeof body !== 'object' || Array.isArray(body)) {
            throw new Rejected(422, 'body must be a JSON object');
          }
          records = [{ fields: body }];
        }
        return records.map((r) => ({
          entity: r.entity ?? undefined,
          identifiers: toJson(r.identifiers ?? {}),
          fields: toJson(r.fields ?? {}),
        }));
      } catch (e) {
        if (e instanceof Rejected) throw { status: e.status, message: e.message };
        if (e instanceof InvalidInput || e instanceof InvalidConfig) throw { status: 422, message: e.message };
        return bug(e);
      }
    },
  };
}
