"""The Python part of the three-language call chain (`hop`, `hops`, as in
the Rust `polyglot`), plus failure cases: `fail` raises after a state write,
`refuse` raises `quark.Rejected`, `grow` allocates memory, `call_missing`
calls an actor type that does not exist. The durable capabilities, as in
`polyglot-js`: `record` and `history` (journal), `send`, `doomed`, `receive`
and `inbox` (outbox), `schedule`, `cancel`, `work` and `seen` (jobs)."""

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

    def record(self, request):
        version = quark.journal.append(request["type"], request["data"])
        return {"version": version, "current": quark.journal.version()}

    def history(self):
        return quark.journal.read(1, 100)

    def send(self, request):
        return quark.outbox.send(request["to"], "receive", request["payload"], id=request.get("id"))

    def doomed(self, request):
        # Sent, then the turn fails: the message is never delivered.
        quark.outbox.send(request["to"], "receive", request["payload"])
        raise ValueError("this turn fails after sending")

    def receive(self, request):
        message_id, sender = quark.outbox.current()
        received = quark.state.get("received", [])
        received.append({"payload": request, "id": message_id, "sender": sender})
        quark.state.set("received", received)

    def inbox(self):
        return quark.state.get("received", [])

    def schedule(self, request):
        return quark.jobs.schedule(
            request["target"], "work", request.get("payload"), after_ms=request.get("after_ms"), key=request.get("key")
        )

    def cancel(self, request):
        return quark.jobs.cancel(request["id"])

    def work(self, request):
        job_id, attempt = quark.jobs.current()
        quark.jobs.progress(50, "halfway")
        quark.state.set("seen", {"id": job_id, "attempt": attempt, "payload": request})

    def seen(self):
        return quark.state.get("seen")


Handler = quark.export(Polyglot)
