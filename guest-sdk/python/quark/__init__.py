"""Quark's Python guest SDK: write an actor as a class of JSON methods.

    import quark

    class Counter(quark.Actor):
        def increment(self, request):
            value = quark.state.get("value", 0) + request["by"]
            quark.state.set("value", value)
            return value

        def get(self):
            return quark.state.get("value", 0)

    Handler = quark.export(Counter)

Every public method of the class is a method of the actor. It takes the
decoded JSON request (or nothing, for a method without a parameter) and
returns a JSON-serialisable reply. A turn's state writes commit when the
method returns; raising discards them. Raise one of this module's errors
(`Rejected`, `NotFound`...) to answer with that error; any other exception
answers `internal` with its type and message.

A workflow is a function of its input, replayed from its history after a
crash or a wait: see `quark.workflow` (`WorkflowRun =
quark.workflow.export(run)`).

An event-sourced actor subclasses `quark.EventSourced` (state as the fold
of its events) and is exported with `Handler, Aggregate =
quark.export_event_sourced(Account)`.

Durable capabilities, each committed with the turn (or not at all):
`journal` (append and read this actor's events), `jobs` (schedule work for
later, retried until it succeeds), `outbox` (messages delivered once, after
the commit).

Built with componentize-py against the `quark:actor` WIT package (the
`actor` world); the `wit_world` bindings it generates are also importable.
"""

import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import types as _types

try:
    from wit_world.imports import jobs as _jobs
    from wit_world.imports import journal as _journal
    from wit_world.imports import outbox as _outbox
    from wit_world.imports import runtime as _runtime
    from wit_world.imports import state as _state
except ImportError:
    # A workflow (the `durable-workflow` world, see `quark.workflow`) has
    # no actor capabilities: its effects go through activities.
    _jobs = _journal = _outbox = _runtime = _state = None

__all__ = [
    "Actor", "export", "EventSourced", "export_event_sourced", "state", "log", "journal", "jobs", "outbox", "call", "tell", "self_id", "self_key", "caller", "now_ms",
    "QuarkError", "NotFound", "Rejected", "BadRequest", "Timeout", "Unavailable", "LimitExceeded", "Internal",
]


class QuarkError(Exception):
    """An error with a Quark kind: raised by host calls, or by a method to reply with it."""

    kind = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def _to_wit(self) -> "_types.Error":
        return _WIT_BY_KIND[self.kind](self.message)


class NotFound(QuarkError):
    """The actor type, method or key does not exist."""
    kind = "not-found"


class Rejected(QuarkError):
    """The request was valid and the actor refused it (a business rule): 422 `rejected`."""
    kind = "rejected"


class BadRequest(Rejected):
    """The caller sent something wrong (a missing or malformed field): 400 `bad-request`.

    On the wire it is `rejected` with a message starting `bad request`.
    """

    def __init__(self, message: str):
        super().__init__(message if message.startswith("bad request") else f"bad request: {message}")


class Timeout(QuarkError):
    """The operation did not finish before its deadline."""
    kind = "timeout"


class Unavailable(QuarkError):
    """A dependency is unavailable; retrying later may succeed."""
    kind = "unavailable"


class LimitExceeded(QuarkError):
    """A limit was exceeded: memory, payload size, state size."""
    kind = "limit-exceeded"


class Internal(QuarkError):
    """A bug: a guest failed or the host failed unexpectedly."""
    kind = "internal"


_WIT_BY_KIND = {
    "not-found": _types.Error_NotFound,
    "rejected": _types.Error_Rejected,
    "timeout": _types.Error_Timeout,
    "unavailable": _types.Error_Unavailable,
    "limit-exceeded": _types.Error_LimitExceeded,
    "internal": _types.Error_Internal,
}
_ERROR_BY_WIT = {
    _types.Error_NotFound: NotFound,
    _types.Error_Rejected: Rejected,
    _types.Error_Timeout: Timeout,
    _types.Error_Unavailable: Unavailable,
    _types.Error_LimitExceeded: LimitExceeded,
    _types.Error_Internal: Internal,
}


def _host(operation: Callable, *args):
    """Calls a host import, turning its WIT error into a `QuarkError`."""
    try:
        return operation(*args)
    except Err as e:
        raise _ERROR_BY_WIT.get(type(e.value), Internal)(getattr(e.value, "value", str(e.value))) from None


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _decode(payload: bytes) -> Any:
    return json.loads(payload) if payload else None


class _Request(dict):
    """A JSON object in a request: reading a field it lacks is the caller's
    mistake (`rejected`, naming the field), not a bug in the actor (a bare
    `KeyError` would be `internal`). `get` and `in` work as on any dict."""

    def __init__(self, pairs: Any, method: str):
        super().__init__(pairs)
        self._method = method

    def __missing__(self, key: Any):
        raise BadRequest(f"bad request for `{self._method}`: missing field `{key}`")


def _decode_request(payload: bytes, method: str) -> Any:
    if not payload:
        return None
    return json.loads(payload, object_pairs_hook=lambda pairs: _Request(pairs, method))


class state:
    """Durable key/value state private to this actor, as JSON values.

    Writes commit with the turn; reads see this turn's own writes.
    """

    @staticmethod
    def get(key: str, default: Any = None) -> Any:
        """The value under `key`, or `default`."""
        raw = _host(_state.get, key)
        return default if raw is None else json.loads(raw)

    @staticmethod
    def set(key: str, value: Any) -> None:
        """Stores `value` (JSON-serialisable) under `key`."""
        _host(_state.set, key, _encode(value))

    @staticmethod
    def delete(key: str) -> None:
        """Removes `key`."""
        _host(_state.delete, key)

    @staticmethod
    def keys() -> List[str]:
        """Every key this actor has, in lexical order."""
        return _host(_state.keys)


class log:
    """Log lines in the host's output, tagged with this actor's id."""

    @staticmethod
    def debug(message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _log.log(_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _log.log(_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _log.log(_log.Level.ERROR, message)


class journal:
    """This actor's append-only event stream. Appends commit with the turn."""

    @staticmethod
    def append(event_type: str, data: Any = None, schema_version: int = 1) -> int:
        """Appends one event (`data` as JSON); returns its version."""
        return _host(_journal.append, [_journal.Event(event_type=event_type, schema_version=schema_version, data=_encode(data))])

    @staticmethod
    def version() -> int:
        """The current version: the last committed event plus this turn's appends."""
        return _host(_journal.version)

    @staticmethod
    def read(start: int = 1, max: int = 100) -> List[Dict[str, Any]]:
        """Up to `max` committed events from version `start` on, oldest first,
        each a dict with its `data` decoded."""
        return [
            {
                "version": e.version,
                "event_type": e.event_type,
                "schema_version": e.schema_version,
                "data": _decode(e.data),
                "recorded_at": e.recorded_at,
                "correlation_id": e.correlation_id,
                "causation_id": e.causation_id,
                "caller": e.caller,
                "method": e.method,
            }
            for e in _host(_journal.read, start, max)
        ]

    @staticmethod
    def request_snapshot() -> None:
        """Asks for a snapshot after this turn commits (event-sourced actors only)."""
        _journal.request_snapshot()


_CATCH_UP = {} if _jobs is None else {"once": _jobs.CatchUp.ONCE, "all": _jobs.CatchUp.ALL, "skip": _jobs.CatchUp.SKIP}


class jobs:
    """Durable jobs: a turn of `target` later, retried with backoff until it
    succeeds, then dead-lettered. Scheduling commits with the turn."""

    @staticmethod
    def schedule(
        target: str,
        method: str,
        payload: Any = None,
        *,
        at_ms: Optional[int] = None,
        after_ms: Optional[int] = None,
        cron: Optional[str] = None,
        time_zone: Optional[str] = None,
        max_attempts: Optional[int] = None,
        backoff_ms: Optional[int] = None,
        max_backoff_ms: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        priority: int = 0,
        queue: Optional[str] = None,
        key: Optional[str] = None,
        catch_up: Optional[str] = None,
    ) -> str:
        """Schedules `method` of `target` with `payload` (JSON); returns the job id.

        When: at most one of `at_ms` (ms since the Unix epoch), `after_ms`
        (after this turn commits) or `cron` (with `time_zone`, UTC if none);
        none runs it as soon as the turn commits. `key` makes scheduling
        idempotent; `catch_up` is "once", "all" or "skip" for missed cron ticks.
        """
        given = [w for w in (at_ms, after_ms, cron) if w is not None]
        for name, value in (("at_ms", at_ms), ("after_ms", after_ms), ("backoff_ms", backoff_ms),
                            ("max_backoff_ms", max_backoff_ms), ("timeout_ms", timeout_ms)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise Rejected(f"{name} must be a non-negative integer, not {value!r}")
        if len(given) > 1:
            raise Rejected("a job runs at_ms, after_ms or on a cron schedule: give one of them")
        if catch_up is not None and catch_up not in _CATCH_UP:
            raise Rejected(f"catch_up is one of once, all, skip, not {catch_up!r}")
        if cron is not None:
            when: Any = _jobs.When_Cron(cron)
        elif at_ms is not None:
            when = _jobs.When_At(at_ms)
        else:
            when = _jobs.When_Delay(after_ms or 0)
        job = _jobs.Job(
            target=target, method=method, payload=_encode(payload), when=when, time_zone=time_zone,
            max_attempts=max_attempts, backoff_ms=backoff_ms, max_backoff_ms=max_backoff_ms, timeout_ms=timeout_ms,
            priority=priority, queue=queue, idempotency_key=key, catch_up=None if catch_up is None else _CATCH_UP[catch_up],
        )
        return _host(_jobs.schedule, job)

    @staticmethod
    def cancel(id: str) -> bool:
        """Cancels a job (with this turn's commit); False if there is no such job."""
        return _host(_jobs.cancel, id)

    @staticmethod
    def current() -> Optional[Tuple[str, int]]:
        """The job this turn runs, if any: its id and attempt (1, 2...)."""
        return _jobs.current()

    @staticmethod
    def progress(percent: int, note: str = "") -> None:
        """Reports the running job's progress (shown by `quark jobs show`)."""
        _jobs.progress(max(0, min(100, int(round(percent)))), str(note))


class outbox:
    """Messages sent with this turn's commit and delivered after it: to an
    actor once (its inbox deduplicates by id), in order per sender and
    receiver; to a sink at least once, as a CloudEvent."""

    @staticmethod
    def send(actor: str, method: str, payload: Any = None, *, id: Optional[str] = None) -> str:
        """Sends `payload` (JSON) to `method` of `actor`; returns the message id."""
        destination = _outbox.Destination_Actor(_outbox.ActorMethod(actor, method))
        return _host(_outbox.send, _outbox.Message(destination=destination, payload=_encode(payload), id=id, event_type=None))

    @staticmethod
    def publish(sink: str, payload: Any = None, *, event_type: Optional[str] = None, id: Optional[str] = None) -> str:
        """Sends `payload` (JSON) to the sink named `sink` in the host's
        config; returns the message id (the CloudEvent's `id`)."""
        return _host(_outbox.send, _outbox.Message(
            destination=_outbox.Destination_Sink(sink), payload=_encode(payload), id=id, event_type=event_type
        ))

    @staticmethod
    def current() -> Optional[Tuple[str, str]]:
        """The message this turn handles, if it is a delivery: its id and sender."""
        return _outbox.current()


def call(target: str, method: str, value: Any = None) -> Any:
    """Calls `method` of actor `target` (`type/key`) with `value`; returns its decoded reply."""
    return _decode(_host(_runtime.call, target, method, _encode(value)))


def tell(target: str, method: str, value: Any = None) -> None:
    """Sends without waiting (volatile: lost if the host stops first)."""
    _host(_runtime.tell, target, method, _encode(value))


def self_id() -> str:
    """This actor's id, `type/key`."""
    return _runtime.self_id()


def self_key() -> str:
    """This actor's key (its id after the type)."""
    return _runtime.self_id().split("/", 1)[1]


def caller() -> Optional[str]:
    """The actor whose call started this turn; None for an outside request."""
    return _runtime.caller()


def now_ms() -> int:
    """Wall-clock time in milliseconds since the Unix epoch."""
    return _runtime.now()


class Actor:
    """Base class of Python actors (optional: any class works with `export`)."""


def _methods(instance: Any) -> Dict[str, Callable]:
    return {
        name: getattr(instance, name)
        for name in dir(type(instance))
        if not name.startswith("_") and callable(getattr(instance, name))
    }


def _handler(instance: Any, methods: Dict[str, Callable]) -> type:
    """The `handler` export: dispatches a turn to one of `methods`."""
    names = ", ".join(sorted(methods))

    class Handler:
        def handle(self, method: str, payload: bytes) -> bytes:
            function = methods.get(method)
            if function is None:
                raise Err(_types.Error_NotFound(f"unknown method `{method}` (this actor has: {names})"))
            try:
                request = _decode_request(payload, method)
            except ValueError as e:
                raise Err(BadRequest(f"bad request for `{method}`: {e}")._to_wit())
            takes_request = function.__code__.co_argcount > 1
            return _guest_call(lambda: function(request) if takes_request else function())

    return Handler


def _guest_call(thunk: Callable[[], Any]) -> bytes:
    """Runs the code behind an export and encodes its result; what it
    raises becomes the WIT error: a `QuarkError` its kind, anything else
    `internal` with its type and message."""
    try:
        return _encode(thunk())
    except QuarkError as e:
        raise Err(e._to_wit())
    except Err:
        raise
    except Exception as e:
        raise Err(_types.Error_Internal(f"{type(e).__name__}: {e}"))


def export(actor_class: type) -> type:
    """Makes `actor_class` the actor: assign the result to `Handler` in the app module.

    One instance lives as long as the activation; durable data belongs in `state`.
    """
    instance = actor_class()
    return _handler(instance, _methods(instance))


class EventSourced:
    """Base class of an event-sourced actor: its state (the instance's
    attributes) is always the fold of its events.

        class Account(quark.EventSourced):
            def __init__(self):
                self.balance = 0

            def apply(self, event_type, data):      # the only code that changes state
                if event_type == "deposited":
                    self.balance += data["amount"]

            def deposit(self, request):             # a command: validate, then emit
                if request["amount"] <= 0:
                    raise quark.Rejected("amount must be positive")
                self.emit("deposited", {"amount": request["amount"]})
                return {"balance": self.balance}

        Handler, Aggregate = quark.export_event_sourced(Account)

    The host rebuilds the state on activation from the latest snapshot
    (the public attributes as JSON) plus the events after it.
    """

    #: Version of the events' shape: bump it when a field changes, and
    #: convert older events in `upcast`.
    schema_version = 1

    def apply(self, event_type: str, data: Any) -> None:
        """Folds one event into the state. It must accept every event `emit` recorded."""
        raise NotImplementedError(f"{type(self).__name__}.apply")

    def upcast(self, event_type: str, schema_version: int, data: Any) -> Any:
        """Turns an event of an older `schema_version` into the current shape (default: as is)."""
        return data

    def emit(self, event_type: str, data: Any = None) -> int:
        """Records an event (committed with this turn) and applies it; returns the new version."""
        version = journal.append(event_type, data, self.schema_version)
        self.apply(event_type, data)
        return version

    def snapshot(self) -> Any:
        """The state as JSON (default: the public attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def restore(self, snapshot: Any) -> None:
        """Replaces the state with a `snapshot` (default: sets the attributes)."""
        vars(self).update(snapshot)


_HOOKS = {"apply", "upcast", "emit", "snapshot", "restore", "schema_version"}


def export_event_sourced(actor_class: type) -> Tuple[type, type]:
    """Makes `actor_class` (an `EventSourced`) an event-sourced actor:
    `Handler, Aggregate = quark.export_event_sourced(Account)` in the app
    module. Its public methods other than the hooks are its commands."""
    instance = actor_class()
    commands = {name: f for name, f in _methods(instance).items() if name not in _HOOKS}

    class Aggregate:
        def apply(self, events: List[Any]) -> None:
            for e in events:
                try:
                    data = _decode(e.data)
                except ValueError as err:
                    raise Err(_types.Error_Internal(f"event {e.version} (`{e.event_type}`) is not JSON: {err}"))
                try:
                    if e.schema_version != instance.schema_version:
                        data = instance.upcast(e.event_type, e.schema_version, data)
                    instance.apply(e.event_type, data)
                except QuarkError as err:
                    raise Err(err._to_wit())
                except Exception as err:
                    raise Err(_types.Error_Internal(
                        f"applying event {e.version} (`{e.event_type}`, schema {e.schema_version}): {type(err).__name__}: {err}"
                    ))

        def snapshot(self) -> bytes:
            try:
                return _encode(instance.snapshot())
            except Exception as err:
                raise Err(_types.Error_Internal(f"encoding the snapshot: {type(err).__name__}: {err}"))

        def restore(self, snapshot: bytes) -> None:
            try:
                instance.restore(_decode(snapshot))
            except Exception as err:
                raise Err(_types.Error_Rejected(f"the snapshot does not restore: {type(err).__name__}: {err}"))

    return _handler(instance, commands), Aggregate
