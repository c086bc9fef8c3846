// Durable workflows in JavaScript: a function of its input that survives
// crashes, restarts and moves, replayed from its history.
//
//   import { workflow, call, sleep, waitSignal, Saga } from 'quark/workflow';
//
//   export const workflowRun = workflow((order) => {
//     const saga = new Saga();
//     call('shop/main', 'reserve', { order: order.order, item: order.item });
//     saga.onFailure('shop/main', 'release', { order: order.order });
//     sleep(2);                                    // durable: a timer job wakes it
//     const approved = waitSignal('approved', 3600);
//     ...
//     return { order: order.order, status: 'shipped' };
//   });
//
// Every answer the host gives (an activity's reply, the time, a random
// number, a signal, a timer firing, and the clocks and random numbers the
// engine itself reads) is recorded as a step of the instance's history.
// After a crash or a wait the host runs the function again from the start
// and answers the recorded steps from the history, so it reaches the same
// point without doing anything twice, then goes on live. Code that asks
// for something other than the history holds (a reordered step after a
// deploy) stops with a `nondeterminism` error. A workflow's effects are
// its activities: the actor capabilities of `quark` (state, call, tell)
// are not in the `durable-workflow` world it is built against
// (`guest-sdk/js/build.sh` picks it for an app that exports `workflowRun`).

import * as wit from 'quark:actor/workflow@0.1.0';
import { BadRequest, ERRORS, Internal, QuarkError, host, asQuarkError } from './errors.js';

export { QuarkError, NotFound, Rejected, BadRequest, Timeout, Unavailable, LimitExceeded, Internal } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const encode = (value) => encoder.encode(JSON.stringify(value === undefined ? null : value));
const decode = (bytes) => (bytes && bytes.length ? JSON.parse(decoder.decode(bytes)) : null);

// Seconds (a number) as the host's milliseconds.
function ms(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) {
    throw new BadRequest(`a duration is a non-negative number of seconds, not ${seconds}`);
  }
  return BigInt(Math.round(seconds * 1000));
}

// A WIT `result<payload, error>` as its decoded value, or a QuarkError.
function outcome(result) {
  if (result.tag === 'ok') return decode(result.val);
  const error = result.val;
  return new (ERRORS[error && error.tag] ?? Internal)(error && error.val);
}

/** A started activity or child workflow, to wait for. */
export class Handle {
  constructor(step) { this.step = step; }
}

/** Starts `method` of actor `target` (`type/key`) as an activity and returns at once; it runs once however often the workflow replays. */
export function start(target, method, value = null) {
  return new Handle(wit.startActivity(target, method, encode(value)));
}

/** Starts the child workflow `id` of `workflowType` (or joins it if it exists). */
export function startChild(workflowType, id, input = null) {
  return new Handle(wit.startChild(workflowType, id, encode(input)));
}

/**
 * Waits for every handle (they run at once): their replies, in order. The
 * first failure is thrown, unless `{ settled: true }`: then failures come
 * back in the array as `QuarkError`s.
 */
export function waitAll(handles, { settled = false } = {}) {
  const results = wit.awaitAll(handles.map((h) => h.step)).map(outcome);
  if (!settled) {
    const failed = results.find((r) => r instanceof QuarkError);
    if (failed) throw failed;
  }
  return results;
}

/** Waits for one handle: its reply (its failure is thrown). */
export function wait(handle) {
  return waitAll([handle])[0];
}

/** Waits for the first of `handles` to finish: `[position, reply]` (a failure comes back as a `QuarkError`). The others keep running. */
export function waitAny(handles) {
  const [position, result] = wit.awaitAny(handles.map((h) => h.step));
  return [position, outcome(result)];
}

/** Runs `method` of actor `target` as an activity and waits for its reply. */
export function call(target, method, value = null) {
  return wait(start(target, method, value));
}

/** Sleeps durably for `seconds` (a timer job wakes the workflow, which need not stay in memory). Throws once the workflow is cancelled. */
export function sleep(seconds) {
  host(wit.sleep, ms(seconds));
}

/** Waits for the signal `name` (sent before or after the wait began): its payload, or `null` after `timeoutSeconds`. Throws once the workflow is cancelled. */
export function waitSignal(name, timeoutSeconds = undefined) {
  const payload = host(wit.waitSignal, name, timeoutSeconds === undefined ? undefined : ms(timeoutSeconds));
  return payload === undefined || payload === null ? null : decode(payload);
}

/** Wall-clock ms since the Unix epoch, the same on every replay. */
export function nowMs() { return Number(wit.now()); }

/** A random 64-bit number (a BigInt), the same on every replay. */
export function random() { return wit.random(); }

/** Sets the status `GET /v1/workflows/{id}` shows (`custom_status`). */
export function setStatus(value) { wit.setStatus(encode(value)); }

/** Ends this run and starts the next one with `input` and an empty history. */
export function continueAsNew(input = null) {
  wit.continueAsNew(encode(input));
  throw new Internal('continue-as-new returned');
}

/** True once a wait of this run threw the cancellation: time to compensate. */
export function isCancelled() { return wit.isCancelled(); }

/** This instance's id. */
export function id() { return wit.id(); }

/** Compensations to run in reverse order when a later step fails. */
export class Saga {
  constructor() { this.steps = []; }

  /** Registers the activity that undoes a step that just succeeded. */
  onFailure(target, method, value = null) { this.steps.push([target, method, value]); }

  /** Runs every compensation, the last registered first, each once (they are activities); the errors of those that failed. */
  compensate() {
    const errors = [];
    for (const [target, method, value] of this.steps.reverse()) {
      try {
        call(target, method, value);
      } catch (e) {
        if (!(e instanceof QuarkError)) throw e;
        errors.push(e);
      }
    }
    this.steps = [];
    return errors;
  }
}

/**
 * Makes `fn(input) -> output` (JSON in and out) the workflow:
 * `export const workflowRun = workflow(run)`. Throwing a `QuarkError` fails
 * the workflow with that error; anything else fails it `internal`.
 */
export function workflow(fn) {
  return {
    run(input) {
      let value;
      try {
        value = decode(input);
      } catch (e) {
        throw new BadRequest(`bad request for the workflow's input: ${e.message}`);
      }
      try {
        return encode(fn(value));
      } catch (e) {
        throw asQuarkError(e);
      }
    },
  };
}
