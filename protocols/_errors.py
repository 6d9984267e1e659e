"""Rig's error hierarchy: one base, data as attributes, and the tree below.

    RigError
    ├── ProtocolError                 a message that cannot be accepted (never retried)
    │   ├── DecodeError               bytes that are neither msgpack nor a JSON object
    │   ├── SchemaError               a valid encoding with the wrong shape
    │   └── PayloadTooLargeError      bigger than the server or Rig accepts
    ├── InvalidNameError (ValueError) a name that cannot be a subject token
    ├── GraphError                    an agent's FSM is invalid (raised when the class loads)
    ├── UnknownAgentError             no agent of that name is registered
    ├── UnknownJobError               no job with that id
    ├── UnknownThreadError            no thread with that id
    ├── JobStateError                 the job's status does not allow that (resolve a running job)
    │   └── JobMovedError             a resolve for a step the job has left
    ├── JobConflictError              a job id reused for another request
    ├── BusyError                     the agent's backlog is past its bound: retry later
    ├── UnavailableError              the servers are away or leaderless for now: retry later
    ├── RetryableError                try again later: the message is nak'ed with `delay`
    ├── NonRetryableError             give up: the message is terminated and dead-lettered
    │   └── ForgedReportError         a report from someone the job's step is not waiting for
    └── RigConnectionError            the NATS server cannot be reached (the network broke it)

The `code` of each class is what travels in an `ErrorReply`, so a client in any
language can tell the cases apart without parsing messages.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RigError(Exception):
    """Base of every error Rig raises on purpose."""

    code: ClassVar[str] = "rig_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        for key, value in details.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **_plain(self.details)}


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | None) else str(v)
        for k, v in details.items()
    }


class ProtocolError(RigError):
    """A message that can never be accepted, however often it is retried."""

    code = "protocol_error"


class DecodeError(ProtocolError):
    """The bytes are neither msgpack nor a JSON object."""

    code = "decode_error"


class SchemaError(ProtocolError):
    """The message decoded, but its fields are not what the subject expects."""

    code = "schema_error"


class PayloadTooLargeError(ProtocolError):
    """The payload exceeds what the server (`max_payload`) or Rig accepts."""

    code = "payload_too_large"


class InvalidNameError(RigError, ValueError):
    """A name that cannot be used as a NATS subject token or consumer name."""

    code = "invalid_name"


class GraphError(RigError):
    """An agent's finite-state machine is invalid; `state` and `problem` say where and why."""

    code = "graph_error"

    def __init__(self, problem: str, *, state: str | None = None) -> None:
        where = f"state {state!r}: " if state is not None else ""
        super().__init__(f"invalid agent graph: {where}{problem}", state=state, problem=problem)


class UnknownAgentError(RigError):
    """No running agent has registered this name."""

    code = "unknown_agent"


class UnknownJobError(RigError):
    """No job with this id exists."""

    code = "unknown_job"


class UnknownThreadError(RigError):
    """No thread with this id exists (or it expired)."""

    code = "unknown_thread"


class UnknownScheduleError(RigError):
    """No schedule with this name exists (`rig schedule ls`)."""

    code = "unknown_schedule"


class JobStateError(RigError):
    """The job exists, but its status does not allow what was asked."""

    code = "job_state"


class JobMovedError(JobStateError):
    """A person's resolve names a step the job has left: it was shown an earlier wait
    (a retry of a resolve already carried out, or a click on a stale inbox card)."""

    code = "job_moved"


class JobConflictError(RigError):
    """A submission reuses a job id with another agent, input or limits."""

    code = "job_conflict"


class BusyError(RigError):
    """The agent's backlog (steps waiting for a process of it) is past the deployment's
    bound: the job was not accepted; ask again after `retry_after` seconds."""

    code = "busy"
    retry_after: float

    def __init__(self, message: str, *, retry_after: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)


class UnavailableError(RigError):
    """The servers could not store or read what a request needs just now (a cluster
    electing a leader, a server restarting): ask again after `retry_after` seconds. A
    submit that failed so names the `job_id` it may have been stored under; asking again
    with it is the same job."""

    code = "unavailable"
    retry_after: float

    def __init__(self, message: str, *, retry_after: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)


class ConfigError(RigError):
    """A configuration cannot work: a malformed LLM config file, or a model provider that
    refuses Rig's requests (`rig models probe` shows what it accepts)."""

    code = "config_error"


class RetryableError(RigError):
    """A handler failed in a way that may pass: the message is redelivered after `delay` s.

    Raised by a side-effecting tool, it does not mean "run me again": the tool may have
    acted before failing, so the call becomes `unknown` and its retry asks the tool's
    `reconcile` (or a person) whether the effect happened. Only a tool declared
    `side_effects=False` is simply run again.
    """

    code = "retryable"
    delay: float

    def __init__(self, message: str, *, delay: float = 1.0, **details: Any) -> None:
        super().__init__(message, delay=delay, **details)


class NonRetryableError(RigError):
    """A handler failed for good: the message is terminated and dead-lettered with the reason."""

    code = "non_retryable"


class ForgedReportError(NonRetryableError):
    """A report whose subject names a sender other than the one the message claims, or
    the one the job's current step waits for: refused and dead-lettered, never applied,
    and the job it names goes on waiting for its real report."""

    code = "forged_report"


class RigConnectionError(RigError, ConnectionError):
    """The NATS server could not be reached or went away."""

    code = "connection_error"


_BY_CODE: dict[str, type[RigError]] = {}


def _register(cls: type[RigError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(RigError)


def error_from_dict(data: dict[str, Any]) -> RigError:
    """Rebuild the error an `ErrorReply` describes (unknown codes become a plain RigError)."""
    cls = _BY_CODE.get(str(data.get("code")), RigError)
    message = str(data.get("message", "unknown error"))
    err = RigError.__new__(cls)
    RigError.__init__(
        err, message, **{k: v for k, v in data.items() if k not in ("code", "message")}
    )
    return err
