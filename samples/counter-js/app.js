// A durable counter in JavaScript: the same methods and state as the Rust
// `counter` sample (`increment {"by": N}` returns the new value, `get`
// returns it), so either can replace the other with the same state.
import { actor, state } from 'quark';

export const handler = actor({
  increment({ by }) {
    const value = state.get('value', 0) + by;
    state.set('value', value);
    return value;
  },
  get() {
    return state.get('value', 0);
  },
});
