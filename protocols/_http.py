"""The bodies of Rig's HTTP API (`rig gateway`), beside the NATS API they map onto."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from protocols._messages import BudgetOverride, JobId, Name, PlainObject, _Api


class HttpSubmit(_Api):
    """`POST /v1/jobs`: start a job of `agent` on `input` (a `SubmitRequest`)."""

    agent: Name
    input: PlainObject
    job_id: JobId | None = Field(
        default=None,
        description="choose the id (or send an Idempotency-Key header) to make the POST "
        "idempotent: the same body again is the same job; another body is `job_conflict`",
    )
    limits: BudgetOverride | None = None


class HttpResolve(_Api):
    """`POST /v1/jobs/{id}/resolve`: a person takes `edge` (a `ResolveRequest`)."""

    edge: Name
    args: PlainObject = Field(default_factory=dict)
    note: str = Field(default="", max_length=4000)
    by: str = Field(default="", max_length=200)
    limits: BudgetOverride | None = None


class HttpCancel(_Api):
    """`POST /v1/jobs/{id}/cancel` (the body may be empty)."""

    reason: str = Field(default="", max_length=2000)


def limits_of(body: HttpSubmit | HttpResolve) -> dict[str, Any]:
    return body.limits.model_dump(exclude_none=True) if body.limits else {}
