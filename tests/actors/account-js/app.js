// An event-sourced bank account in JavaScript (as the Rust `bank` sample):
// `deposit` and `withdraw` emit events, `apply` folds them, `doomed` emits
// and then fails (its event must not count).
import { Rejected, eventSourced, journal } from 'quark';

export const { handler, aggregate } = eventSourced({
  state: { balance: 0, operations: 0 },
  apply(state, type, data) {
    if (type === 'deposited') state.balance += data.amount;
    else if (type === 'withdrawn') state.balance -= data.amount;
    state.operations += 1;
  },
  deposit({ amount }) {
    if (amount <= 0) throw new Rejected('amount must be positive');
    this.emit('deposited', { amount });
    return { balance: this.state.balance };
  },
  withdraw({ amount }) {
    if (amount > this.state.balance) throw new Rejected('insufficient funds');
    this.emit('withdrawn', { amount });
    return { balance: this.state.balance };
  },
  doomed({ amount }) {
    this.emit('deposited', { amount });
    throw new TypeError('this turn fails after emitting');
  },
  balance_of() {
    return { ...this.state, version: journal.version() };
  },
});
