// {{name}}: a hookyard plugin. Build: `hookyard plugin build`; test: `hookyard plugin test`.
//
// Hooks not written here pass data through (definePlugin's defaults: the gateway's envelope,
// nothing written back, the pushed JSON object as one record). Types: hookyard-plugin.d.ts.

import { definePlugin, InvalidInput, Rejected, log, request, send } from './hookyard-plugin.js';

export const handler = definePlugin({
  // >> outgoing
  /** The event becomes one JSON request: its type, the user's id and email. */
  outgoing(config, hook, event) {
    if (event.data === null || typeof event.data !== 'object') {
      throw new InvalidInput('event data must be a JSON object');
    }
    log.debug(`{{name}}: ${event.type} for ${hook.name}`);
    return send(request({ type: event.type, user_id: event.data.id ?? null, email: event.data.email ?? null }));
  },
  // << outgoing
  // >> response

  /** A 2xx answer's `id` is written back as `remote_id`; other answers write nothing. */
  response(config, hook, event, response) {
    if (response.status < 200 || response.status >= 300) return null;
    const body = response.json();
    return body !== null && typeof body === 'object' && 'id' in body ? { remote_id: body.id } : null;
  },
  // << response
  // >> inbound

  /** A pushed JSON object becomes one record, identified by its `id`. */
  inbound(config, hook, req) {
    const body = req.json();
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new Rejected(422, 'body must be a JSON object');
    }
    if (!('id' in body)) throw new Rejected(422, 'body has no id');
    return [{ identifiers: { id: body.id }, fields: body }];
  },
  // << inbound
});
