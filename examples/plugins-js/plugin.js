// A hookyard plugin written in JavaScript (componentize-js), with the helpers of sdk/js.
//
// outgoing: sends {"event": <type>, "user": <data.username or null>, "source": "javascript"}
//           instead of the gateway's default body, with an `x-plugin-language` header; with
//           {"include_data": true} as the webhook's config, the event's data too, under "data".
// response: writes nothing back (the helper's default).
// inbound:  the pushed JSON object becomes one record (identifiers: {"id": ...} when the body has
//           an "id", else {}).
// validate-config: accepts any config that is JSON (the helper parses it).
//
// Build: ./build.sh  ->  out/plugin.wasm (it copies ../../sdk/js/hookyard-plugin.js here first).

import { definePlugin, Rejected, log, request, send } from './hookyard-plugin.js';

export const handler = definePlugin({
  outgoing(config, hook, event) {
    const data = event.data;
    const user = data !== null && typeof data === 'object' ? (data.username ?? null) : null;
    log.debug(`javascript plugin: ${event.type} for webhook ${hook.name}`);
    const body = { event: event.type, user, source: 'javascript' };
    if (config !== null && typeof config === 'object' && config.include_data) body.data = data;
    return send(
      request(
        body,
        { headers: { 'x-plugin-language': 'javascript' }, contentType: 'application/json' },
      ),
    );
  },

  inbound(config, hook, req) {
    const body = req.json();
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new Rejected(422, 'body must be a JSON object');
    }
    return [{ identifiers: 'id' in body ? { id: body.id } : {}, fields: body }];
  },
});
