"""The Python part of the three-language call chain (`hop`, `hops`, as in
the Rust `polyglot`), plus failure cases: `fail` raises after a state write,
`refuse` raises `quark.Rejected`, `grow` allocates memory, `call_missing`
calls an actor type that does not exist."""

import quark


class Polyglot(quark.Actor):
    def hop(self, request):
        hops = quark.state.get("hops", 0) + 1
        quark.state.set("hops", hops)
        visits = [{"actor": quark.self_id(), "language": "python", "hops": hops, "caller": quark.caller()}]
        path = request["path"]
        if path:
            visits += quark.call(path[0], "hop", {"path": path[1:]})
        return visits

    def hops(self):
        return quark.state.get("hops", 0)

    def fail(self, request):
        quark.state.set("hops", 1000)
        raise ValueError(request["message"])

    def refuse(self, request):
        raise quark.Rejected(request["message"])

    def grow(self, request):
        # Holds `mb` MiB in the instance for as long as it lives.
        self.ballast = bytearray(request["mb"] << 20)
        return len(self.ballast)

    def call_missing(self):
        try:
            quark.call("no-such-type/x", "get")
        except quark.NotFound as e:
            return "not-found: " + e.message


Handler = quark.export(Polyglot)
