// The JavaScript part of the three-language call chain (`hop`, `hops`, as
// in the Rust `polyglot`), plus failure cases: `fail` throws after a state
// write, `refuse` throws `Rejected`, `grow` allocates memory, `callMissing`
// calls an actor type that does not exist.
import { NotFound, Rejected, actor, call, caller, selfId, state } from 'quark';

let ballast = null;

export const handler = actor({
  hop({ path }) {
    const hops = state.get('hops', 0) + 1;
    state.set('hops', hops);
    const visits = [{ actor: selfId(), language: 'javascript', hops, caller: caller() ?? null }];
    if (path.length) visits.push(...call(path[0], 'hop', { path: path.slice(1) }));
    return visits;
  },
  hops() {
    return state.get('hops', 0);
  },
  fail({ message }) {
    state.set('hops', 1000);
    throw new TypeError(message);
  },
  refuse({ message }) {
    throw new Rejected(message);
  },
  grow({ mb }) {
    // Holds `mb` MiB in the instance for as long as it lives.
    ballast = new Uint8Array(mb << 20).fill(1);
    return ballast.length;
  },
  callMissing() {
    try {
      call('no-such-type/x', 'get');
    } catch (e) {
      if (e instanceof NotFound) return `not-found: ${e.message}`;
      throw e;
    }
  },
});
