"""A durable counter in Python: the same methods and state as the Rust
`counter` sample (`increment {"by": N}` returns the new value, `get` returns
it), so either can replace the other with the same state."""

import quark


class Counter(quark.Actor):
    def increment(self, request):
        value = quark.state.get("value", 0) + request["by"]
        quark.state.set("value", value)
        return value

    def get(self):
        return quark.state.get("value", 0)


Handler = quark.export(Counter)
