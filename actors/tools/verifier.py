"""The verifier actor: checks what a tool returned before the job moves on."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, cast, overload

from opentelemetry import trace

from actors.runtime import tracing as tracing
from actors.runtime.actor import Actor, Delivery, Inbox
from actors.runtime.metrics import CHECKS, child
from actors.runtime.results import resolved, resolved_context
from protocols import (
    Graph,
    Names,
    NonRetryableError,
    RetryableError,
    Verdict,
    VerifyRequest,
    _permissions as permissions,
    check_token,
    msg_id,
)
from protocols._permissions import Role

Check = Callable[[Any, VerifyRequest], Awaitable[bool | tuple[bool, str]]]
F = TypeVar("F", bound=Check)


@overload
def verifier(fn: F, /) -> F: ...
@overload
def verifier(*, name: str | None = None, timeout: float = 30.0) -> Callable[[F], F]: ...
def verifier(
    fn: F | None = None, /, *, name: str | None = None, timeout: float = 30.0
) -> F | Callable[[F], F]:
    """Mark an async method of a `Verifier` as a check the graph's edges can name.

    The method gets the `VerifyRequest` (tool, args, result, job context) and returns
    `True`/`False` or `(passed, reason)`. `RetryableError` means the check could not be
    made now: the request is delivered again later, as for tools and agents (and after
    its last delivery a person is told). Any other exception counts as a failed check,
    with the exception as the reason.
    """

    def mark(f: F) -> F:
        if not inspect.iscoroutinefunction(cast(Any, f)):  # cast: keep `F` for the return
            raise TypeError(f"@verifier {f.__qualname__} must be `async def`: it is awaited")
        f._rig_verifier = (check_token(name or f.__name__, what="verifier name"), timeout)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


class Verifier(Actor):
    """Checks tool results: pass moves the job along its edge, fail sends it to `on_fail`.

    To write your own: subclass and mark async methods with `@verifier`:

        class RefundChecks(Verifier):
            name = "refund-checks"

            @verifier
            async def refund_matches(self, request: VerifyRequest) -> tuple[bool, str]:
                ok = request.result["amount"] == request.args["amount"]
                return ok, "amount refunded matches the request" if ok else "amount differs"

    Consumes `rig.work.verify.<verifier>` (durable `verify-<verifier>`) for each of its
    checks: `VerifyRequest`. Publishes `Verdict` on
    `rig.work.supervisor.verify.<verifier>.<partition>`.
    """

    kind = "verifier"

    checks: ClassVar[dict[str, tuple[float, Check]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = dict(cls.checks)
        for attr in dir(cls):
            mark = getattr(getattr(cls, attr, None), "_rig_verifier", None)
            if mark is not None:
                found[mark[0]] = (mark[1], getattr(cls, attr))
        cls.checks = found

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        return permissions.verifier(names, cls.role_name(), cls.checks)

    def inboxes(self) -> list[Inbox]:
        return [
            Inbox(
                durable=self.names.verifier_durable(name),
                subject=self.names.verifier(name),
                model=VerifyRequest,
                handler=self.on_request,
            )
            for name in self.checks
        ]

    async def on_request(self, request: VerifyRequest, delivery: Delivery) -> None:
        if not tracing.enabled():
            await self._verify(request, delivery)
            return
        attributes = {
            "rig.job.id": request.job_id,
            "rig.step": request.step,
            "openinference.span.kind": "EVALUATOR",  # how Phoenix and its peers show it
        }
        with tracing.span(f"verify {request.verifier}", attributes=attributes):
            await self._verify(request, delivery)

    async def _verify(self, request: VerifyRequest, delivery: Delivery) -> None:
        if request.verifier not in self.checks:
            raise NonRetryableError(
                f"{self.name} has no verifier {request.verifier!r}", verifier=request.verifier
            )
        timeout, check = self.checks[request.verifier]
        seen = request.model_copy(  # the check sees results stored by reference as values
            update={
                "result": await resolved(self, request.result),
                "context": await resolved_context(self, request.context),
            }
        )
        try:
            outcome = await asyncio.wait_for(check(self, seen), timeout)
            passed, reason = outcome if isinstance(outcome, tuple) else (bool(outcome), "")
        except RetryableError:
            raise  # the check could not run now (its service is down): asked again later
        except Exception as exc:
            self.log.error("verifier.raised", verifier=request.verifier, exc_info=exc)
            passed, reason = False, f"the check raised {type(exc).__name__}: {exc}"
        verdict = Verdict(
            job_id=request.job_id,
            step=request.step,
            verifier=request.verifier,
            passed=bool(passed),
            reason=str(reason),
            tool_result=request.tool_result,
        )
        verdict.handled = self.handled(delivery)
        child(CHECKS, request.verifier, "passed" if verdict.passed else "failed").inc()
        if tracing.enabled():
            trace.get_current_span().add_event(
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": request.verifier,
                    "gen_ai.evaluation.score.label": "pass" if verdict.passed else "fail",
                    "gen_ai.evaluation.score.value": 1.0 if verdict.passed else 0.0,
                    "gen_ai.evaluation.explanation": verdict.reason[:1000],
                },
            )
        await self.publish(
            self.names.report("verify", request.verifier, request.job_id),
            verdict,
            msg_id=msg_id(request.job_id, request.step, "verdict"),
        )
