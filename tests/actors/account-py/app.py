"""An event-sourced bank account in Python (as the Rust `bank` sample):
`deposit` and `withdraw` emit events, `apply` folds them, `doomed` emits and
then fails (its event must not count), `history` reads the journal."""

import quark


class Account(quark.EventSourced):
    def __init__(self):
        self.balance = 0
        self.operations = 0

    def apply(self, event_type, data):
        if event_type == "deposited":
            self.balance += data["amount"]
        elif event_type == "withdrawn":
            self.balance -= data["amount"]
        self.operations += 1

    def deposit(self, request):
        if request["amount"] <= 0:
            raise quark.Rejected("amount must be positive")
        self.emit("deposited", {"amount": request["amount"]})
        return {"balance": self.balance}

    def withdraw(self, request):
        if request["amount"] > self.balance:
            raise quark.Rejected("insufficient funds")
        self.emit("withdrawn", {"amount": request["amount"]})
        return {"balance": self.balance}

    def doomed(self, request):
        self.emit("deposited", {"amount": request["amount"]})
        raise ValueError("this turn fails after emitting")

    def balance_of(self):
        return {"balance": self.balance, "operations": self.operations, "version": quark.journal.version()}


Handler, Aggregate = quark.export_event_sourced(Account)
