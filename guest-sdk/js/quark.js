// Quark's JavaScript guest SDK: write an actor as an object of JSON methods.
//
//   import { actor, state } from 'quark';
//
//   export const handler = actor({
//     increment({ by }) {
//       const value = state.get('value', 0) + by;
//       state.set('value', value);
//       return value;
//     },
//     get() { return state.get('value', 0); },
//   });
//
// Each method takes the decoded JSON request and returns a JSON-serialisable
// reply. A turn's state writes commit when the method returns; throwing
// discards them. Throw a `QuarkError` (`new Rejected('...')`...) to answer
// with that error; anything else thrown answers `internal` with its message.
//
// Built with @bytecodealliance/componentize-js against the `quark:actor` WIT
// package (the `actor` world). The raw imports (`quark:actor/journal@0.1.0`,
// `jobs`, `outbox`) can be imported directly for what this module does not wrap.

import * as wit_state from 'quark:actor/state@0.1.0';
import * as wit_runtime from 'quark:actor/runtime@0.1.0';
import { log as wit_log } from 'quark:actor/log@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An error with a Quark kind: thrown by host calls, or by a method to reply with it. */
export class QuarkError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'QuarkError';
    this.kind = kind;
    // componentize-js returns `payload` as the handler's `error` variant.
    this.payload = { tag: kind, val: String(message) };
  }
}

/** The actor type, method or key does not exist. */
export class NotFound extends QuarkError { constructor(message) { super('not-found', message); } }
/** The request was understood and refused (validation, bad payload). */
export class Rejected extends QuarkError { constructor(message) { super('rejected', message); } }
/** The operation did not finish before its deadline. */
export class Timeout extends QuarkError { constructor(message) { super('timeout', message); } }
/** A dependency is unavailable; retrying later may succeed. */
export class Unavailable extends QuarkError { constructor(message) { super('unavailable', message); } }
/** A limit was exceeded: memory, payload size, state size. */
export class LimitExceeded extends QuarkError { constructor(message) { super('limit-exceeded', message); } }
/** A bug: a guest failed or the host failed unexpectedly. */
export class Internal extends QuarkError { constructor(message) { super('internal', message); } }

const ERRORS = {
  'not-found': NotFound,
  rejected: Rejected,
  timeout: Timeout,
  unavailable: Unavailable,
  'limit-exceeded': LimitExceeded,
  internal: Internal,
};

// Calls a host import, turning its WIT error into a `QuarkError`.
function host(operation, ...args) {
  try {
    return operation(...args);
  } catch (e) {
    const error = e && e.payload;
    if (error && typeof error.tag === 'string') throw new (ERRORS[error.tag] ?? Internal)(error.val);
    throw e;
  }
}

const encode = (value) => encoder.encode(JSON.stringify(value === undefined ? null : value));
const decode = (bytes) => (bytes.length ? JSON.parse(decoder.decode(bytes)) : null);

/** Durable key/value state private to this actor, as JSON values. Writes commit with the turn. */
export const state = {
  /** The value under `key`, or `fallback`. */
  get(key, fallback = undefined) {
    const raw = host(wit_state.get, key);
    return raw === undefined || raw === null ? fallback : JSON.parse(decoder.decode(raw));
  },
  /** Stores `value` (JSON-serialisable) under `key`. */
  set(key, value) { host(wit_state.set, key, encode(value)); },
  /** Removes `key`. */
  delete(key) { host(wit_state['delete'], key); },
  /** Every key this actor has, in lexical order. */
  keys() { return host(wit_state.keys); },
};

/** Log lines in the host's output, tagged with this actor's id. */
export const log = {
  debug(message) { wit_log('debug', String(message)); },
  info(message) { wit_log('info', String(message)); },
  warn(message) { wit_log('warn', String(message)); },
  error(message) { wit_log('error', String(message)); },
};

/** Calls `method` of actor `target` (`type/key`) with `value`; returns its decoded reply. */
export function call(target, method, value = null) {
  return decode(host(wit_runtime.call, target, method, encode(value)));
}

/** Sends without waiting (volatile: lost if the host stops first). */
export function tell(target, method, value = null) {
  host(wit_runtime.tell, target, method, encode(value));
}

/** This actor's id, `type/key`. */
export function selfId() { return wit_runtime.selfId(); }

/** This actor's key (its id after the type). */
export function selfKey() { return wit_runtime.selfId().split('/').slice(1).join('/'); }

/** The actor whose call started this turn; undefined for an outside request. */
export function caller() { return wit_runtime.caller() ?? undefined; }

/** Wall-clock time in milliseconds since the Unix epoch. */
export function nowMs() { return Number(wit_runtime.now()); }

/** Makes `methods` the actor: `export const handler = actor({ ... })`. */
export function actor(methods) {
  const names = Object.keys(methods).sort().join(', ');
  return {
    handle(method, payload) {
      const fn = Object.prototype.hasOwnProperty.call(methods, method) ? methods[method] : undefined;
      if (typeof fn !== 'function') throw new NotFound(`unknown method \`${method}\` (this actor has: ${names})`);
      let request;
      try {
        request = decode(payload);
      } catch (e) {
        throw new Rejected(`bad request for \`${method}\`: ${e.message}`);
      }
      try {
        return encode(fn.call(methods, request));
      } catch (e) {
        if (e instanceof QuarkError) throw e;
        const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
        throw new Internal(message);
      }
    },
  };
}
