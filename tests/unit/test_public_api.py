"""The public surface is a decision: growing it means changing this test."""

import subprocess
import sys
import zlib

import pytest

import actors
import protocols


def test_actors_exports() -> None:
    assert sorted(actors.__all__) == sorted(
        [
            "LLM",
            "Actor",
            "Agent",
            "Claim",
            "Delivery",
            "Endpoint",
            "Gateway",
            "Inbox",
            "LLMReply",
            "Ledger",
            "LedgerRecord",
            "Price",
            "RigClient",
            "RigConfig",
            "RoutePrompt",
            "RuleLLM",
            "Supervisor",
            "ToolContext",
            "ToolExecutor",
            "Verifier",
            "tool",
            "tool_context",
            "verifier",
        ]
    )
    # Each name loads when first used, from the module the type checkers were told of.
    for name in actors.__all__:
        value = getattr(actors, name)
        assert value.__name__ == name, name
        assert value.__module__ == f"actors.{actors._WHERE[name]}", name  # its subsystem's
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = actors.Nope  # type: ignore[attr-defined]


def test_testing_exports() -> None:
    """`actors.testing`: what a user's tests of their own actors import."""
    import actors.testing

    assert sorted(actors.testing.__all__) == sorted(
        [
            "Deployment",
            "JobRun",
            "LocalRig",
            "NatsServer",
            "RuleLLM",
            "ScriptExhausted",
            "ScriptedLLM",
            "Text",
            "assert_edges",
            "assert_path",
            "assert_status",
            "call_tool",
            "edges_of",
            "eventually",
            "path_of",
            "run_check",
            "run_job",
        ]
    )
    for name in actors.testing.__all__:
        assert hasattr(actors.testing, name), name


def test_the_command_line_loads_only_what_a_command_needs() -> None:
    """`rig --help` and `rig --version` load neither NATS, nor the HTTP stack, nor tracing."""
    code = "import sys, actors.cli.main; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in ("nats", "aiohttp", "opentelemetry")]


def test_protocols_exports() -> None:
    assert sorted(protocols.__all__) == sorted(
        [
            "ANSWER_MAX_CHARS",
            "DEFAULT_MAX_STEPS",
            "LOOKUP",
            "PUSH_LABEL",
            "RESULT_REF",
            "TERMINAL_STATUSES",
            "ActorReady",
            "AgentInfo",
            "BreakerState",
            "Budget",
            "BudgetOverride",
            "BusyError",
            "CancelJob",
            "CancelRequest",
            "ChildEnded",
            "ChildSlot",
            "Children",
            "DeadlineCheck",
            "Escalation",
            "InboxReply",
            "InboxRequest",
            "JobMovedError",
            "JobStateError",
            "ResolveJob",
            "ResolveRequest",
            "Sampling",
            "SignalJob",
            "SignalRequest",
            "SignalTimeout",
            "ConfigError",
            "ContentType",
            "DeadLetter",
            "Decision",
            "DecodeError",
            "Edge",
            "Encoding",
            "InputLimits",
            "input_limits",
            "set_input_limits",
            "ErrorReply",
            "Event",
            "EscalationKind",
            "ExhaustedKind",
            "Handled",
            "Graph",
            "GraphError",
            "InjectionPath",
            "Header",
            "InvalidNameError",
            "JobContext",
            "JobConflictError",
            "JobEntry",
            "JobInfo",
            "JobSnapshot",
            "JobStatusName",
            "Names",
            "MAX_PARTITIONS",
            "ForgedReportError",
            "NonRetryableError",
            "Outgoing",
            "ParentLink",
            "PayloadTooLargeError",
            "ProtocolError",
            "RetryableError",
            "RigConnectionError",
            "RigError",
            "SchemaError",
            "StallCheck",
            "StartJob",
            "State",
            "StatusRequest",
            "StepRequest",
            "SubmitReply",
            "SubmitRequest",
            "SupervisorMessage",
            "ThreadEnded",
            "ThreadNext",
            "ThreadRecord",
            "ThreadSummary",
            "Memory",
            "Flow",
            "FlowEnded",
            "FlowNext",
            "FlowTick",
            "FlowRecord",
            "FlowWaiter",
            "MemoryScope",
            "ThreadTurn",
            "Compaction",
            "TimerMessage",
            "ToolCall",
            "ToolCancel",
            "ToolEntry",
            "ToolResult",
            "UnavailableError",
            "UnknownAgentError",
            "UnknownJobError",
            "UnknownScheduleError",
            "UnknownThreadError",
            "Usage",
            "Verdict",
            "VerifyRequest",
            "WebhookDelivery",
            "WebhookRecord",
            "WebhookTarget",
            "canonical",
            "check_plain",
            "check_token",
            "child_job_id",
            "decode",
            "decode_as",
            "encode",
            "error_from_dict",
            "explain",
            "idempotency_key",
            "loads",
            "breaker_key",
            "kv_subject",
            "model_count",
            "model_count_of",
            "msg_id",
            "partition_of",
            "presence_key",
            "ref_name",
            "result_ref",
            "sniff",
            "validate",
        ]
    )
    for name in protocols.__all__:
        assert hasattr(protocols, name)


def test_default_names_match_the_design() -> None:
    names = protocols.Names()
    assert names.api_submit == "rig.api.submit"
    assert names.supervisor == "rig.work.supervisor.api.*"
    assert names.partitions == 1 and names.supervisor_for("j1") == "rig.work.supervisor.api.0"
    names = protocols.Names(partitions=protocols.MAX_PARTITIONS)
    p = protocols.partition_of("j1", 16)
    assert 0 <= p < 16 and p == zlib.crc32(b"j1") % 16
    assert names.supervisor_for("j1") == f"rig.work.supervisor.api.{p}"
    assert (
        names.report("tool", "issue_refund", "j1") == f"rig.work.supervisor.tool.issue_refund.{p}"
    )
    assert names.partition_subjects(p) == [
        f"rig.work.supervisor.api.{p}",
        f"rig.work.supervisor.*.*.{p}",
    ]
    assert names.sender_of(f"rig.work.supervisor.verify.v.{p}") == ("verify", "v")
    assert names.sender_of(names.supervisor_for("j1")) is None
    assert names.agent("refund") == "rig.work.agent.refund"
    assert names.tool("issue_refund") == "rig.work.tool.issue_refund"
    assert names.verifier("v") == "rig.work.verify.v"
    assert names.events("j1") == "rig.events.j1"
    assert names.dlq("supervisor") == "rig.dlq.supervisor"
    assert (names.work_stream, names.events_stream, names.dlq_stream) == (
        "RIG_WORK",
        "RIG_EVENTS",
        "RIG_DLQ",
    )
    assert names.jobs_bucket == "RIG_JOBS"
