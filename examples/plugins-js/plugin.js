// A hookyard plugin written in JavaScript (componentize-js).
//
// outgoing: sends {"event": <type>, "user": <data.username or null>, "source": "javascript"}
//           instead of the gateway's default body.
// response: writes nothing back.
// inbound:  the pushed JSON object becomes one record (identifiers: {"id": ...} when the body has
//           an "id", else {}).
// validate-config: accepts any config that is JSON.
//
// Conventions of the JavaScript bindings: the exported interface is an object named after it
// (`handler`), functions and record fields are camelCase, `list<u8>` is a Uint8Array, a variant
// is `{ tag, val }`, an `option` is a value or `undefined`, and a `result` error is thrown.
// Build: ./build.sh  ->  out/plugin.wasm

import { log } from 'hookyard:plugin/log@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const toJson = (value) => encoder.encode(JSON.stringify(value));
const fromJson = (bytes) => JSON.parse(bytes.length ? decoder.decode(bytes) : 'null');

export const handler = {
  validateConfig(config) {
    try {
      fromJson(config);
    } catch (e) {
      throw `config is not JSON: ${e.message}`;
    }
  },

  outgoing(config, hook, ev) {
    let data;
    try {
      data = fromJson(ev.data);
    } catch (e) {
      throw { tag: 'invalid-input', val: `event data is not JSON: ${e.message}` };
    }
    const user = data !== null && typeof data === 'object' ? (data.username ?? null) : null;
    log('debug', `javascript plugin: ${ev.eventType} for webhook ${hook.name}`);
    return {
      tag: 'send',
      val: [
        {
          method: undefined,
          path: undefined,
          query: undefined,
          headers: [['x-plugin-language', 'javascript']],
          body: toJson({ event: ev.eventType, user, source: 'javascript' }),
          contentType: 'application/json',
        },
      ],
    };
  },

  response(config, hook, ev, resp) {
    return undefined;
  },

  inbound(config, hook, req) {
    let body;
    try {
      body = fromJson(req.body);
    } catch (e) {
      throw { status: 400, message: `body is not JSON: ${e.message}` };
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw { status: 422, message: 'body must be a JSON object' };
    }
    const identifiers = 'id' in body ? { id: body.id } : {};
    return [{ entity: undefined, identifiers: toJson(identifiers), fields: toJson(body) }];
  },
};
