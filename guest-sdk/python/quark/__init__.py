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

Built with componentize-py against the `quark:actor` WIT package (the
`actor` world); the `wit_world` bindings it generates are also importable for
what this module does not wrap (journal, jobs, outbox).
"""

import json
from typing import Any, Callable, Dict, List, Optional

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import runtime as _runtime
from wit_world.imports import state as _state
from wit_world.imports import types as _types

__all__ = [
    "Actor", "export", "state", "log", "call", "tell", "self_id", "self_key", "caller", "now_ms",
    "QuarkError", "NotFound", "Rejected", "Timeout", "Unavailable", "LimitExceeded", "Internal",
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
    """The request was understood and refused (validation, bad payload)."""
    kind = "rejected"


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


def export(actor_class: type) -> type:
    """Makes `actor_class` the actor: assign the result to `Handler` in the app module.

    One instance lives as long as the activation; durable data belongs in `state`.
    """
    instance = actor_class()
    methods = _methods(instance)
    names = ", ".join(sorted(methods))

    class Handler:
        def handle(self, method: str, payload: bytes) -> bytes:
            function = methods.get(method)
            if function is None:
                raise Err(_types.Error_NotFound(f"unknown method `{method}` (this actor has: {names})"))
            try:
                request = _decode(payload)
            except ValueError as e:
                raise Err(_types.Error_Rejected(f"bad request for `{method}`: {e}"))
            try:
                takes_request = function.__code__.co_argcount > 1
                reply = function(request) if takes_request else function()
                return _encode(reply)
            except QuarkError as e:
                raise Err(e._to_wit())
            except Err:
                raise
            except Exception as e:
                raise Err(_types.Error_Internal(f"{type(e).__name__}: {e}"))

    return Handler
