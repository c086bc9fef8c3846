"""Durable workflows in Python: a function of its input that survives
crashes, restarts and moves, replayed from its history.

    from quark import workflow

    def run(order):
        saga = workflow.Saga()
        workflow.call("shop/main", "reserve", {"order": order["order"], "item": order["item"]})
        saga.on_failure("shop/main", "release", {"order": order["order"]})
        workflow.sleep(2)                                     # durable: a timer job wakes it
        approved = workflow.wait_signal("approved", timeout=3600)
        ...
        return {"order": order["order"], "status": "shipped"}

    WorkflowRun = workflow.export(run)

Every answer the host gives (an activity's reply, the time, a random
number, a signal, a timer firing, and the clocks Python itself reads) is
recorded as a step of the instance's history. After a crash or a wait the
host runs `run` again from the start and answers the recorded steps from
the history, so the code reaches the same point without doing anything
twice, then goes on live. Code that asks for something other than the
history holds (a reordered step after a deploy) stops with a
`nondeterminism` error. The effects of a workflow are its activities:
`quark.state`, `call` and `tell` are not available in one.

Built against the `durable-workflow` world: `guest-sdk/python/build.sh`
picks it for an app that assigns `WorkflowRun`.
"""

import json
from datetime import timedelta
from typing import Any, Callable, List, Optional, Tuple, Union

from componentize_py_types import Err, Ok

try:
    from wit_world.imports import workflow as _wf
except ImportError as e:  # an actor, not a workflow, imported this module
    raise ImportError(
        "quark.workflow works in a workflow only: assign `WorkflowRun = workflow.export(run)` in app.py "
        "so the build uses the `durable-workflow` world"
    ) from e

from . import BadRequest, Internal, QuarkError, _ERROR_BY_WIT, _decode, _decode_request, _encode, _guest_call, _host

__all__ = [
    "export", "Handle", "call", "start", "start_child", "wait", "wait_all", "wait_any", "sleep", "wait_signal",
    "now_ms", "random", "set_status", "continue_as_new", "is_cancelled", "id", "Saga",
]

Seconds = Union[int, float, timedelta]


class Handle:
    """A started activity or child workflow, to wait for."""

    __slots__ = ("step",)

    def __init__(self, step: int):
        self.step = step

    def __repr__(self) -> str:
        return f"Handle({self.step})"


def _ms(duration: Seconds) -> int:
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise BadRequest(f"a duration is a non-negative number of seconds or a timedelta, not {duration!r}")
    return int(round(seconds * 1000))


def _outcome(result: Any) -> Any:
    """A WIT `result<payload, error>` as a decoded value, or the error as a `QuarkError`."""
    if isinstance(result, Ok):
        return _decode(result.value)
    if isinstance(result, Err):
        error = result.value
        return _ERROR_BY_WIT.get(type(error), Internal)(getattr(error, "value", str(error)))
    return Internal(f"an unexpected reply from the host: {result!r}")


def start(target: str, method: str, value: Any = None) -> Handle:
    """Starts `method` of actor `target` (`type/key`) with `value` as an
    activity and returns at once; it runs once however often the workflow replays."""
    return Handle(_wf.start_activity(target, method, _encode(value)))


def start_child(workflow_type: str, id: str, input: Any = None) -> Handle:
    """Starts the child workflow `id` of `workflow_type` (or joins it if it exists)."""
    return Handle(_wf.start_child(workflow_type, id, _encode(input)))


def wait_all(handles: List[Handle], return_exceptions: bool = False) -> List[Any]:
    """Waits for every handle (they run at once): their replies, in order.
    The first failure is raised, unless `return_exceptions`: then failures
    come back in the list as `QuarkError`s (like `asyncio.gather`)."""
    results = [_outcome(r) for r in _wf.await_all([h.step for h in handles])]
    if not return_exceptions:
        for r in results:
            if isinstance(r, QuarkError):
                raise r
    return results


def wait(handle: Handle) -> Any:
    """Waits for one handle: its reply (its failure is raised)."""
    return wait_all([handle])[0]


def wait_any(handles: List[Handle]) -> Tuple[int, Any]:
    """Waits for the first of `handles` to finish: its position in `handles`
    and its reply (a failure comes back as a `QuarkError`, not raised). The
    others keep running; wait for them later."""
    position, result = _wf.await_any([h.step for h in handles])
    return position, _outcome(result)


def call(target: str, method: str, value: Any = None) -> Any:
    """Runs `method` of actor `target` as an activity and waits for its reply."""
    return wait(start(target, method, value))


def sleep(duration: Seconds) -> None:
    """Sleeps durably for `duration` (seconds, or a timedelta): a timer job
    wakes the workflow, which need not stay in memory meanwhile. Raises
    once the workflow is cancelled."""
    _host(_wf.sleep, _ms(duration))


def wait_signal(name: str, timeout: Optional[Seconds] = None) -> Any:
    """Waits for the signal `name` (sent before or after the wait began):
    its payload, or None after `timeout`. Raises once the workflow is cancelled."""
    payload = _host(_wf.wait_signal, name, None if timeout is None else _ms(timeout))
    return None if payload is None else _decode(payload)


def now_ms() -> int:
    """Wall-clock ms since the Unix epoch, the same on every replay."""
    return _wf.now()


def random() -> int:
    """A random 64-bit number, the same on every replay."""
    return _wf.random()


def set_status(value: Any) -> None:
    """Sets the status `GET /v1/workflows/{id}` shows (`custom_status`)."""
    _wf.set_status(_encode(value))


def continue_as_new(input: Any = None) -> None:
    """Ends this run and starts the next one with `input` and an empty history."""
    _wf.continue_as_new(_encode(input))
    raise Internal("continue-as-new returned")


def is_cancelled() -> bool:
    """True once a wait of this run raised the cancellation: time to compensate."""
    return _wf.is_cancelled()


def id() -> str:
    """This instance's id."""
    return _wf.id()


class Saga:
    """Compensations to run in reverse order when a later step fails."""

    def __init__(self) -> None:
        self._steps: List[Tuple[str, str, Any]] = []

    def on_failure(self, target: str, method: str, value: Any = None) -> None:
        """Registers the activity that undoes a step that just succeeded."""
        self._steps.append((target, method, value))

    def compensate(self) -> List[QuarkError]:
        """Runs every compensation, the last registered first, each once
        (they are activities); the errors of those that failed."""
        errors = []
        for target, method, value in reversed(self._steps):
            try:
                call(target, method, value)
            except QuarkError as e:
                errors.append(e)
        self._steps.clear()
        return errors


def export(function: Callable[[Any], Any]) -> type:
    """Makes `function(input) -> output` (JSON in and out) the workflow:
    assign the result to `WorkflowRun` in the app module. Raising a
    `QuarkError` fails the workflow with that error; any other exception
    fails it `internal`."""

    class WorkflowRun:
        def run(self, input: bytes) -> bytes:
            try:
                value = _decode_request(input, "run")
            except ValueError as e:
                raise Err(BadRequest(f"bad request for the workflow's input: {e}")._to_wit())
            return _guest_call(lambda: function(value))

    return WorkflowRun
