// Quark's errors for the JavaScript guest SDK, shared by actors
// (`quark.js`) and workflows (`workflow.js`): what a host call throws and
// what a method or workflow throws to answer with that kind.

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
/** The request was valid and the actor refused it (a business rule): 422 `rejected`. */
export class Rejected extends QuarkError { constructor(message) { super('rejected', message); } }
/**
 * The caller sent something wrong (a missing or malformed field): 400 `bad-request`.
 * On the wire it is `rejected` with a message starting `bad request`.
 */
export class BadRequest extends Rejected {
  constructor(message) { super(String(message).startsWith('bad request') ? message : `bad request: ${message}`); }
}
/** The operation did not finish before its deadline. */
export class Timeout extends QuarkError { constructor(message) { super('timeout', message); } }
/** A dependency is unavailable; retrying later may succeed. */
export class Unavailable extends QuarkError { constructor(message) { super('unavailable', message); } }
/** A limit was exceeded: memory, payload size, state size. */
export class LimitExceeded extends QuarkError { constructor(message) { super('limit-exceeded', message); } }
/** A bug: a guest failed or the host failed unexpectedly. */
export class Internal extends QuarkError { constructor(message) { super('internal', message); } }

export const ERRORS = {
  'not-found': NotFound,
  rejected: Rejected,
  timeout: Timeout,
  unavailable: Unavailable,
  'limit-exceeded': LimitExceeded,
  internal: Internal,
};

// Calls a host import, turning its WIT error into a `QuarkError`.
export function host(operation, ...args) {
  try {
    return operation(...args);
  } catch (e) {
    const error = e && e.payload;
    if (error && typeof error.tag === 'string') throw new (ERRORS[error.tag] ?? Internal)(error.val);
    throw e;
  }
}

// `e` as a QuarkError: itself, or `internal` with its name and message.
export function asQuarkError(e, context = '') {
  if (e instanceof QuarkError) return e;
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return new Internal(context + message);
}
