// The JavaScript part of the three-language call chain (`hop`, `hops`, as
// in the Rust `polyglot`), plus failure cases: `fail` throws after a state
// write, `refuse` throws `Rejected`, `grow` allocates memory, `callMissing`
// calls an actor type that does not exist. The durable capabilities, as in
// `polyglot-py`: `record` and `history` (journal), `send`, `doomed`,
// `receive` and `inbox` (outbox), `schedule`, `cancel`, `work` and `seen` (jobs).
import { NotFound, Rejected, actor, call, caller, jobs, journal, outbox, selfId, state } from 'quark';

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
  record({ type, data }) {
    const version = journal.append(type, data);
    return { version, current: journal.version() };
  },
  history() {
    return journal.read(1, 100);
  },
  send({ to, payload, id }) {
    return outbox.send(to, 'receive', payload, { id });
  },
  doomed({ to, payload }) {
    // Sent, then the turn fails: the message is never delivered.
    outbox.send(to, 'receive', payload);
    throw new TypeError('this turn fails after sending');
  },
  receive(payload) {
    const [id, sender] = outbox.current();
    const received = state.get('received', []);
    received.push({ payload, id, sender });
    state.set('received', received);
  },
  inbox() {
    return state.get('received', []);
  },
  schedule({ target, payload, after_ms, key }) {
    return jobs.schedule(target, 'work', payload, { afterMs: after_ms, key });
  },
  cancel({ id }) {
    return jobs.cancel(id);
  },
  work(payload) {
    const [id, attempt] = jobs.current();
    jobs.progress(50, 'halfway');
    state.set('seen', { id, attempt, payload });
  },
  seen() {
    return state.get('seen', null);
  },
});
