// Types of hookyard-plugin.js: the helpers for hookyard plugins written in JavaScript.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Headers = Array<[string, string]>;

/** The webhook a call is made for. */
export interface Webhook {
  id: string;
  name: string;
  url: string;
  method: string;
}

/** An internal event, its data and context parsed. */
export interface Event {
  id: string;
  /** For example `user.created`. */
  type: string;
  /** RFC 3339. */
  occurredAt: string;
  data: Json;
  context: Json;
  rawData: Uint8Array;
}

/** The third party's answer to a delivery. */
export interface Response {
  status: number;
  headers: Headers;
  body: Uint8Array;
  header(name: string): string | undefined;
  json(): Json;
}

/** A third party's push. */
export interface InboundRequest {
  method: string;
  path: string;
  query: string;
  headers: Headers;
  body: Uint8Array;
  contentType: string | undefined;
  header(name: string): string | undefined;
  json(): Json;
}

/** A request the gateway sends (the WIT's outgoing-request). */
export interface OutgoingRequest {
  method: string | undefined;
  path: string | undefined;
  query: string | undefined;
  headers: Headers;
  body: Uint8Array;
  contentType: string | undefined;
}

export type OutgoingAction = { tag: 'send'; val: OutgoingRequest[] } | { tag: 'skip'; val: string };

/** One internal record made of an inbound push. */
export interface InboundRecord {
  /** None: the webhook's configured entity. */
  entity?: string;
  identifiers?: { [field: string]: Json };
  fields: { [field: string]: Json };
}

export interface RequestOptions {
  method?: string;
  /** Appended to the webhook's URL path. */
  path?: string;
  /** Without `?`. */
  query?: string;
  headers?: Headers | { [name: string]: string };
  /** Default `application/json`. */
  contentType?: string;
}

/** The hooks a plugin may implement; every one receives the webhook's plugin config, parsed. */
export interface Hooks {
  /** Throw InvalidConfig to refuse a config. */
  validateConfig?(config: Json): void;
  /** An event becomes the request(s) to send. Default: the gateway's envelope. */
  outgoing?(config: Json, hook: Webhook, event: Event): OutgoingAction;
  /**
   * The answer becomes fields to write back, or nothing. Called only for webhooks with a
   * `writeback` section, after a successful delivery (every request answered 2xx), with the
   * answer to the last request sent (a fan-out's last).
   */
  response?(config: Json, hook: Webhook, event: Event, response: Response): { [field: string]: Json } | null | undefined;
  /** A push becomes records; throw Rejected to refuse it. Default: the JSON object is one record. */
  inbound?(config: Json, hook: Webhook, request: InboundRequest): InboundRecord[];
}

/** The WIT `handler` export made from your hooks. */
export function definePlugin(hooks: Hooks): unknown;

export function request(body: Uint8Array | string | Json | undefined, options?: RequestOptions): OutgoingRequest;
export function send(...requests: OutgoingRequest[]): OutgoingAction;
export function skip(reason: string): OutgoingAction;
export function envelope(event: Event): { type: string; timestamp: string; data: Json; context: Json };
export function toJson(value: Json): Uint8Array;
export function fromJson(bytes: Uint8Array, what?: string): Json;
export function snakeCase(name: string): string;
export function kebabCase(name: string): string;
export function camelCase(name: string): string;
export function pascalCase(name: string): string;
export function convertKeys(value: Json, convert: (key: string) => string): Json;

/** The event or answer does not fit: the WIT's `invalid-input`. */
export class InvalidInput extends Error {}
/** The webhook's plugin config does not fit: the WIT's `invalid-config`. */
export class InvalidConfig extends Error {}
/** Refuses an inbound push with a 4xx status. */
export class Rejected extends Error {
  constructor(status: number, message: string);
  status: number;
}

export const log: {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};
