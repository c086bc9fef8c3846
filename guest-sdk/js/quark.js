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
// Durable capabilities, each committed with the turn (or not at all):
// `journal` (append and read this actor's events), `jobs` (schedule work for
// later, retried until it succeeds), `outbox` (messages delivered once,
// after the commit).
//
// Built with @bytecodealliance/componentize-js against the `quark:actor` WIT
// package (the `actor` world); the raw imports (`quark:actor/journal@0.1.0`...)
// can be imported directly too.

import * as wit_state from 'quark:actor/state@0.1.0';
import * as wit_runtime from 'quark:actor/runtime@0.1.0';
import * as wit_journal from 'quark:actor/journal@0.1.0';
import * as wit_jobs from 'quark:actor/jobs@0.1.0';
import * as wit_outbox from 'quark:actor/outbox@0.1.0';
import { log as wit_log } from 'quark:actor/log@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

import { QuarkError, NotFound, Rejected, BadRequest, Timeout, Unavailable, LimitExceeded, Internal, host, asQuarkError } from './errors.js';

export { QuarkError, NotFound, Rejected, BadRequest, Timeout, Unavailable, LimitExceeded, Internal };

// Fields a method read that its request does not have (this turn).
let missingFields = [];

// JSON cannot hold NaN or Infinity (JSON.stringify writes `null`): arithmetic
// on a missing field must fail the turn, not store null.
class NotFinite extends Error {}
const finiteOnly = (_key, v) => {
  if (typeof v === 'number' && !Number.isFinite(v)) throw new NotFinite(String(v));
  return v;
};
const encode = (value) => encoder.encode(JSON.stringify(value === undefined ? null : value, finiteOnly));
const decode = (bytes) => (bytes.length ? JSON.parse(decoder.decode(bytes)) : null);

// The request as the method sees it: objects note the fields read that they
// lack, so a turn that then produces NaN names the missing field.
const NOT_FIELDS = new Set(['toJSON', 'then', 'constructor']);
function requestView(value) {
  if (value === null || typeof value !== 'object') return value;
  return new Proxy(value, {
    get(target, prop, receiver) {
      const field = Reflect.get(target, prop, receiver);
      if (typeof prop === 'string' && !NOT_FIELDS.has(prop) && !(prop in target)) missingFields.push(prop);
      return field !== null && typeof field === 'object' ? requestView(field) : field;
    },
  });
}

// A NotFinite from encoding, as the caller's error when a field was missing.
function notFiniteError(e, method) {
  if (missingFields.length) return new BadRequest(`bad request for \`${method}\`: missing field \`${missingFields[0]}\``);
  return new Rejected(`\`${method}\` produced ${e.message}, which JSON cannot hold`);
}

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

/** This actor's append-only event stream. Appends commit with the turn. */
export const journal = {
  /** Appends one event (`data` as JSON); returns its version. */
  append(eventType, data = null, schemaVersion = 1) {
    return Number(host(wit_journal.append, [{ eventType, schemaVersion, data: encode(data) }]));
  },
  /** The current version: the last committed event plus this turn's appends. */
  version() { return Number(host(wit_journal.version)); },
  /** Up to `max` committed events from version `start` on, oldest first, with `data` decoded. */
  read(start = 1, max = 100) {
    return host(wit_journal.read, BigInt(start), max).map((e) => ({
      version: Number(e.version),
      eventType: e.eventType,
      schemaVersion: e.schemaVersion,
      data: decode(e.data),
      recordedAt: Number(e.recordedAt),
      correlationId: e.correlationId,
      causationId: e.causationId,
      caller: e.caller ?? undefined,
      method: e.method,
    }));
  },
  /** Asks for a snapshot after this turn commits (event-sourced actors only). */
  requestSnapshot() { wit_journal.requestSnapshot(); },
};

// A non-negative integer option as the WIT's u64 (undefined when absent).
function optionalU64(name, n) {
  if (n === undefined || n === null) return undefined;
  if (!Number.isSafeInteger(n) || n < 0) throw new Rejected(`${name} must be a non-negative integer, not ${JSON.stringify(n)}`);
  return BigInt(n);
}

/**
 * Durable jobs: a turn of `target` later, retried with backoff until it
 * succeeds, then dead-lettered. Scheduling commits with the turn.
 */
export const jobs = {
  /**
   * Schedules `method` of `target` with `payload` (JSON); returns the job id.
   * `options`: at most one of `atMs` (ms since the Unix epoch), `afterMs`
   * (after this turn commits) or `cron` (with `timeZone`, UTC if none); none
   * runs it as soon as the turn commits. Also `maxAttempts`, `backoffMs`,
   * `maxBackoffMs`, `timeoutMs`, `priority`, `queue`, `key` (idempotent
   * scheduling) and `catchUp` ('once', 'all' or 'skip' for missed cron ticks).
   */
  schedule(target, method, payload = null, options = {}) {
    const { atMs, afterMs, cron } = options;
    if ([atMs, afterMs, cron].filter((w) => w !== undefined && w !== null).length > 1) {
      throw new Rejected('a job runs atMs, afterMs or on a cron schedule: give one of them');
    }
    if (options.catchUp != null && !['once', 'all', 'skip'].includes(options.catchUp)) {
      throw new Rejected(`catchUp is one of once, all, skip, not ${JSON.stringify(options.catchUp)}`);
    }
    let when;
    if (cron !== undefined && cron !== null) when = { tag: 'cron', val: String(cron) };
    else if (atMs !== undefined && atMs !== null) when = { tag: 'at', val: optionalU64('atMs', atMs) };
    else when = { tag: 'delay', val: optionalU64('afterMs', afterMs ?? 0) };
    return host(wit_jobs.schedule, {
      target,
      method,
      payload: encode(payload),
      when,
      timeZone: options.timeZone,
      maxAttempts: options.maxAttempts,
      backoffMs: optionalU64('backoffMs', options.backoffMs),
      maxBackoffMs: optionalU64('maxBackoffMs', options.maxBackoffMs),
      timeoutMs: optionalU64('timeoutMs', options.timeoutMs),
      priority: options.priority ?? 0,
      queue: options.queue,
      idempotencyKey: options.key,
      catchUp: options.catchUp ?? undefined,
    });
  },
  /** Cancels a job (with this turn's commit); false if there is no such job. */
  cancel(id) { return host(wit_jobs.cancel, id); },
  /** The job this turn runs, if any: `[id, attempt]`. */
  current() { return wit_jobs.current() ?? undefined; },
  /** Reports the running job's progress (shown by `quark jobs show`). */
  progress(percent, note = '') { wit_jobs.progress(Math.max(0, Math.min(100, Math.round(percent))), String(note)); },
};

/**
 * Messages sent with this turn's commit and delivered after it: to an actor
 * once (its inbox deduplicates by id), in order per sender and receiver; to a
 * sink at least once, as a CloudEvent.
 */
export const outbox = {
  /** Sends `payload` (JSON) to `method` of `actor`; returns the message id. `options.id` sets it. */
  send(actor, method, payload = null, options = {}) {
    return host(wit_outbox.send, {
      destination: { tag: 'actor', val: { actor, method } },
      payload: encode(payload),
      id: options.id,
      eventType: undefined,
    });
  },
  /** Sends `payload` (JSON) to the sink named `sink` in the host's config; returns the message id. */
  publish(sink, payload = null, options = {}) {
    return host(wit_outbox.send, {
      destination: { tag: 'sink', val: sink },
      payload: encode(payload),
      id: options.id,
      eventType: options.eventType,
    });
  },
  /** The message this turn handles, if it is a delivery: `[id, sender]`. */
  current() { return wit_outbox.current() ?? undefined; },
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

// The `handler` export: dispatches a turn to one of `methods`, called with
// `self` as `this`.
function handlerFor(methods, self) {
  const names = Object.keys(methods).sort().join(', ');
  return {
    handle(method, payload) {
      const fn = Object.prototype.hasOwnProperty.call(methods, method) ? methods[method] : undefined;
      if (typeof fn !== 'function') throw new NotFound(`unknown method \`${method}\` (this actor has: ${names})`);
      let request;
      try {
        request = requestView(decode(payload));
      } catch (e) {
        throw new BadRequest(`bad request for \`${method}\`: ${e.message}`);
      }
      missingFields = [];
      try {
        return encode(fn.call(self, request));
      } catch (e) {
        throw e instanceof NotFinite ? notFiniteError(e, method) : asQuarkError(e);
      }
    },
  };
}


/** Makes `methods` the actor: `export const handler = actor({ ... })`. */
export function actor(methods) {
  return handlerFor(methods, methods);
}

const HOOKS = new Set(['state', 'apply', 'upcast', 'schemaVersion']);

/**
 * Makes an event-sourced actor, whose state is always the fold of its events:
 *
 *   export const { handler, aggregate } = eventSourced({
 *     state: { balance: 0 },                       // the initial state (JSON)
 *     apply(state, type, data) {                   // the only code that changes it
 *       if (type === 'deposited') state.balance += data.amount;
 *     },
 *     deposit({ amount }) {                        // a command: validate, then emit
 *       if (amount <= 0) throw new Rejected('amount must be positive');
 *       this.emit('deposited', { amount });
 *       return { balance: this.state.balance };
 *     },
 *   });
 *
 * `apply` may change `state` in place or return a new one. Every other
 * function is a command, called with `this.state` and `this.emit(type, data)`
 * (records the event with the turn's commit, applies it, returns the new
 * version). `schemaVersion` (default 1) and `upcast(type, schemaVersion,
 * data)` convert events of older shapes. The host rebuilds the state on
 * activation from the latest snapshot (the state as JSON) plus the events after it.
 */
export function eventSourced(definition) {
  const { apply, upcast } = definition;
  const schemaVersion = definition.schemaVersion ?? 1;
  if (typeof apply !== 'function') throw new TypeError('eventSourced needs an apply(state, type, data) function');
  const initial = JSON.stringify(definition.state ?? {});
  const self = {
    state: JSON.parse(initial),
    emit(type, data = null) {
      const version = journal.append(type, data, schemaVersion);
      fold(type, data);
      return version;
    },
  };
  function fold(type, data) {
    const next = apply(self.state, type, data);
    if (next !== undefined) self.state = next;
  }
  const commands = {};
  for (const [name, fn] of Object.entries(definition)) {
    if (typeof fn === 'function' && !HOOKS.has(name)) commands[name] = fn;
  }
  const aggregate = {
    apply(events) {
      for (const e of events) {
        let data;
        try {
          data = decode(e.data);
        } catch (err) {
          throw new Internal(`event ${e.version} (\`${e.eventType}\`) is not JSON: ${err.message}`);
        }
        try {
          if (e.schemaVersion !== schemaVersion && upcast) data = upcast(e.eventType, e.schemaVersion, data);
          fold(e.eventType, data);
        } catch (err) {
          throw asQuarkError(err, `applying event ${e.version} (\`${e.eventType}\`, schema ${e.schemaVersion}): `);
        }
      }
    },
    snapshot() {
      return encode(self.state);
    },
    restore(snapshot) {
      try {
        self.state = decode(snapshot);
      } catch (err) {
        throw new Rejected(`the snapshot does not restore: ${err.message}`);
      }
    },
  };
  return { handler: handlerFor(commands, self), aggregate };
}
