"""`rig eval run` on the real system: the chain agent through `rig chaos-llm`, whose
`--main-path p` makes a job succeed with probability p^3 (three steps on the main path).
The printed verdict and the exit code agree: 0 pass, 1 fail, 3 inconclusive."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from actors.evals.run import Expect, Trial, load_suite, report, run_trials, score
from actors.testing import Deployment
from protocols import Event, JobInfo, SchemaError
from tests.conftest import REFUND, ROOT
from tests.integration.test_cli import rig_cli
from tests.integration.test_llm import llm_config, start_chaos
from tests.support.chain import CHAIN

pytestmark = pytest.mark.integration

SUITE = """
agent = "chain"
trials = 10
concurrency = 10
timeout_s = 60

[[case]]
name = "three ticks"
input = {n = 1}
[case.expect]
status = "succeeded"
state = "done"
path_contains = ["b", "c"]
edges_avoid = ["give_up"]
tools_called = [{tool = "tick", args = {n = 1}}]
"""


def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(SUITE)
    return path


async def eval_run(rig: Deployment, suite: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await rig_cli(rig, "eval", "run", str(suite), "--json", *args)
    assert code in (0, 1, 3), err
    assert "side effects are real" in err  # the trials are jobs of a live deployment
    return code, json.loads(out)


async def with_chaos(rig: Deployment, main_path: str) -> Any:
    server = await start_chaos("--main-path", main_path, "--seed", "3")
    llm_config(rig, server.url)
    await rig.spawn(*CHAIN)
    return server


async def test_a_good_agent_passes_and_too_few_trials_are_inconclusive(
    rig: Deployment, tmp_path: Path
) -> None:
    server = await with_chaos(rig, "1.0")
    try:
        suite = suite_file(tmp_path)
        code, result = await eval_run(rig, suite, "--target", "0.7")
        # 10 of 10: the Wilson lower bound 0.722 reaches 0.7.
        assert (code, result["verdict"]) == (0, "pass")
        assert (result["passed"], result["scored"], result["infra"]) == (10, 10, 0)
        [case] = result["cases"]
        assert case["pass_k"] == [1.0] * 10 and not case["flaky"]
        assert len({trial["job_id"] for trial in result["trials"]}) == 10  # ten real jobs
        # 3 of 3: [0.439, 1] straddles 0.7; the command says how many trials would decide
        # at this rate (9 of 9: the lower bound 9 / (9 + z²) = 0.701 reaches 0.7).
        code, result = await eval_run(rig, suite, "--target", "0.7", "--trials", "3")
        assert (code, result["verdict"]) == (3, "inconclusive")
        assert result["trials_to_decide"] == 9
        code, out, _ = await rig_cli(
            rig, "eval", "run", str(suite), "--target", "0.7", "--trials", "3"
        )
        assert code == 3 and "INCONCLUSIVE" in out and "about 9 trials" in out
    finally:
        server.proc.terminate()
        await server.proc.wait()


async def test_a_bad_agent_fails_the_gate_and_a_worse_one_is_a_regression(
    rig: Deployment, tmp_path: Path
) -> None:
    suite, baseline, junit = suite_file(tmp_path), tmp_path / "base.json", tmp_path / "j.xml"
    html = tmp_path / "report.html"
    good = await with_chaos(rig, "1.0")
    try:
        code, _ = await eval_run(rig, suite, "--out", str(baseline), "--seed", "9")
        assert code == 0  # no target: no gate
        # The same agent again, on the same seeds: ten pairs, none discordant.
        code, again = await eval_run(rig, suite, "--baseline", str(baseline), "--seed", "9")
        assert code == 0 and again["baseline"]["regressions"] == []
        [same] = again["baseline"]["cases"]
        assert (same["test"], same["pairs"], same["broke"], same["fixed"]) == ("mcnemar", 10, 0, 0)
    finally:
        good.proc.terminate()
        await good.proc.wait()
    await rig.stop_all()
    bad = await with_chaos(rig, "0.0")  # never the main path: every job gives up
    try:
        code, result = await eval_run(
            rig,
            suite,
            "--target",
            "0.7",
            "--baseline",
            str(baseline),
            "--seed",
            "9",
            "--junit",
            str(junit),
            "--html",
            str(html),
        )
        code_text, out, _ = await rig_cli(
            rig, "eval", "run", str(suite), "--baseline", str(baseline), "--trials", "5"
        )
    finally:
        bad.proc.terminate()
        await bad.proc.wait()
    assert (code, result["verdict"]) == (1, "fail")
    assert (result["passed"], result["scored"]) == (0, 10)
    wrong = result["trials"][0]["wrong"]
    assert "status failed, expected succeeded" in wrong and "took edge 'give_up'" in wrong
    # The same seeds: ten pairs, all passed before and fail now; exact McNemar p = 2 / 2^10.
    assert result["baseline"]["regressions"] == ["three ticks"]
    [worse] = result["baseline"]["cases"]
    assert (worse["test"], worse["pairs"], worse["broke"], worse["fixed"]) == ("mcnemar", 10, 10, 0)
    assert worse["p_value"] == round(2 / 2**10, 6)
    assert "McNemar p = 0.0020 (10 paired trials)" in html.read_text()
    # Other seeds (a new run seed): no pairs; 10/10 -> 0/5 by Fisher, p = 1 / C(15, 5).
    assert "three ticks: 10/10 -> 0/5 (Fisher p = 0.0003)" in out
    # Without a target, the regression alone fails the run, and says so last.
    assert code_text == 1 and out.splitlines()[-1].startswith("FAIL: 1 significant regression")
    xml = ElementTree.parse(junit).getroot()
    assert xml.get("failures") == "2"  # the case, and the gate
    assert {case.get("name") for case in xml.iter("testcase")} == {"three ticks", "gate"}


def ended(status: str, path: list[str]) -> JobInfo:
    """A chain job that ended `status` after `path`, as `rig status` reports it."""
    return JobInfo.model_validate(
        {
            "job_id": "j",
            "agent": "chain",
            "status": status,
            "state": path[-1],
            "steps": len(path) - 1,
            "max_steps": 25,
            "path": path,
            "created_at": 0.0,
            "updated_at": 1.0,
        }
    )


def test_scoring_an_outage_is_infrastructure_not_the_agent() -> None:
    info = ended("failed", ["a", "gave_up"])
    outage = Event(
        job_id="j",
        seq=3,
        step=1,
        type="decision",
        data={"edge": "give_up", "fallback": True, "outage": True, "reason": "no provider"},
    )
    assert score(Expect(), info, [outage])[0] == "infra"
    wrong_answer = outage.model_copy(update={"data": {"edge": "give_up", "fallback": True}})
    outcome, wrong = score(Expect(), info, [wrong_answer])
    assert outcome == "fail" and wrong == ["status failed, expected succeeded"]


def test_a_suite_with_a_typo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(SUITE.replace("edges_avoid", "edges_avoided"))
    with pytest.raises(SchemaError, match="edges_avoided"):
        load_suite(str(path))


async def test_an_outage_mid_eval_is_infrastructure_not_a_lower_pass_rate(
    rig: Deployment, tmp_path: Path
) -> None:
    """The model server dies after the fourth trial: the trials after it end on the safe
    edge for an outage, and are counted apart; the agent's own rate stays what it was."""
    rig.extra_env["RIG_MAX_DELIVER"] = "2"  # an outage takes the safe edge at once
    server = await with_chaos(rig, "1.0")
    suite = load_suite(str(suite_file(tmp_path)))
    done: list[Trial] = []

    def on_trial(trial: Trial) -> None:
        done.append(trial)
        if len(done) == 4:
            server.proc.kill()  # the outage

    try:
        trials = await run_trials(
            rig.client, suite, trials=12, concurrency=1, seed=1, on_trial=on_trial
        )
    finally:
        if server.proc.returncode is None:
            server.proc.kill()
        await server.proc.wait()
    result = report(suite, trials, 0.5)
    assert [t.outcome for t in trials[:4]] == ["pass"] * 4
    assert result.infra == 8 and all("model outage" in t.wrong[0] for t in trials[4:])
    assert result.passed == result.scored == 4  # no failure charged to the agent
    assert result.to_dict()["cases"][0]["infra"] == 8


PLUGIN_TESTS = """
import pytest


@pytest.mark.rig_eval(suite="{suite}", trials=10, target=0.7)
def test_the_chain_is_good_enough():
    pass


@pytest.mark.rig_eval(suite="{suite}", trials=10, target=0.99)
def test_the_chain_is_nearly_perfect():
    pass


def test_the_fixture_gives_the_report(rig_eval):
    result = rig_eval.run("{suite}", trials=3)
    assert result.passed == result.scored == 3
"""


async def test_plain_pytest_runs_a_suite_and_fails_on_the_gate(
    rig: Deployment, tmp_path: Path
) -> None:
    server = await with_chaos(rig, "1.0")
    tests = tmp_path / "test_agent_evals.py"
    tests.write_text(PLUGIN_TESTS.format(suite=suite_file(tmp_path)))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # A user's plain pytest, without the plugin of what Rig's bench extra installs
            # (the pytest options of Rig's pyproject do not apply in another folder).
            *("-p", "no:langsmith_plugin"),
            str(tests),
            cwd=tmp_path,
            env=rig.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out = (await asyncio.wait_for(proc.communicate(), 300))[0].decode()
    finally:
        server.proc.terminate()
        await server.proc.wait()
    # 10/10 reaches 0.7; its interval [0.72, 1] cannot show 0.99: that test fails, saying so.
    assert proc.returncode == 1, out
    assert "2 passed" in out and "1 failed" in out and "1 error" not in out, out
    assert "FAILED test_agent_evals.py::test_the_chain_is_nearly_perfect" in out
    assert "inconclusive" in out and "INCONCLUSIVE" in out


async def test_the_shipped_refund_suite_passes_on_the_refund_example(rig: Deployment) -> None:
    await rig.spawn(*REFUND)
    suite = str(ROOT / "examples" / "evals" / "refund.toml")
    code, result = await eval_run(rig, Path(suite), "--trials", "5", "--target", "0.5")
    # 5 of 5 each, 10 of 10 in all: the lower bound 0.722 reaches 0.5.
    wrong = [(trial["case"], trial["wrong"]) for trial in result["trials"] if trial["wrong"]]
    assert (code, result["verdict"], wrong) == (0, "pass", [])
    assert [(case["passed"], case["scored"]) for case in result["cases"]] == [(5, 5), (5, 5)]


def _broken_scorer(info: JobInfo, events: list[Event]) -> bool:
    raise KeyError("text")


def test_a_scorer_that_raises_fails_its_trial_saying_so() -> None:
    info = ended("succeeded", ["a", "b", "c", "done"])
    expect = Expect(scorer="tests.integration.test_evals:_broken_scorer")
    outcome, wrong = score(expect, info, [])
    assert outcome == "fail"
    assert wrong == ["tests.integration.test_evals:_broken_scorer: raised KeyError: 'text'"]


async def test_trials_are_independent_and_a_seed_replays_them(
    rig: Deployment, tmp_path: Path
) -> None:
    """The chain's model has the response cache on and answers at temperature 0: without
    the eval's bypass every trial would get the first trial's answers. Each trial carries
    its own seed, which chaos-llm samples its answer from, like a model: the trials differ,
    and the same run seed gives the same trials again."""
    server = await start_chaos("--main-path", "0.6", "--seed", "3")
    llm_config(rig, server.url, cache=True)
    await rig.spawn(*CHAIN)
    suite = suite_file(tmp_path)
    try:
        _, first = await eval_run(rig, suite, "--trials", "8", "--seed", "5")
        _, again = await eval_run(rig, suite, "--trials", "8", "--seed", "5")
        _, other = await eval_run(rig, suite, "--trials", "8", "--seed", "6")
    finally:
        server.proc.terminate()
        await server.proc.wait()

    def runs(record: dict[str, Any]) -> list[tuple[int, int, tuple[str, ...]]]:
        return [(t["index"], t["seed"], tuple(t["path"])) for t in record["trials"]]

    assert first["seed"] == 5 and len({t["seed"] for t in first["trials"]}) == 8
    assert len({path for _, _, path in runs(first)}) > 1  # not one cached answer
    assert runs(again) == runs(first)  # the same seeds, the same paths
    assert {seed for _, seed, _ in runs(other)}.isdisjoint(seed for _, seed, _ in runs(first))
    # The job keeps what it was submitted with.
    trial = first["trials"][0]
    code, out, _ = await rig_cli(rig, "status", trial["job_id"], "--json")
    assert code == 0 and json.loads(out)["sampling"] == {"seed": trial["seed"], "cache": False}


INSTRUMENTED = """
agent = "chain"
trials = 6
concurrency = 6
timeout_s = 60
seed = 11

[embeddings]
base_url = "{agent_url}"
model = "chaos-embed"

[judge]
base_url = "{judge_url}"
model = "chaos-judge"
k = 3

[[case]]
name = "the tick says n"
input = {{n = 1}}
[case.expect]
similar = [{{path = "$.results.tick", reference = '{{"n": 1}}', threshold = 0.99}}]
judge = "the job ticked three times and finished"

[[case]]
name = "the tick is not a refund"
input = {{n = 2}}
[case.expect]
similar = [{{path = "$.results.tick", reference = "the refund was issued", threshold = 0.8}}]
"""


async def test_semantic_similarity_and_a_judge_that_reports_its_spread(
    rig: Deployment, tmp_path: Path
) -> None:
    """Similarity by the embeddings of chaos-llm's `/v1/embeddings`; the judge is a second
    chaos-llm that takes its first edge (pass) 60% of the time: its votes split, and the
    report says how much."""
    agent_model = await with_chaos(rig, "1.0")
    judge_model = await start_chaos("--main-path", "0.6", "--seed", "4")
    suite = tmp_path / "instrumented.toml"
    suite.write_text(INSTRUMENTED.format(agent_url=agent_model.url, judge_url=judge_model.url))
    html = tmp_path / "report.html"
    try:
        code, result = await eval_run(rig, suite, "--html", str(html))
        code_text, out, _ = await rig_cli(rig, "eval", "run", str(suite))
    finally:
        for server in (agent_model, judge_model):
            server.proc.terminate()
            await server.proc.wait()
    assert code == 0 and result["infra"] == 0
    judged, unlike = result["cases"]
    similar = "similar $.results.tick"
    for trial in result["trials"]:
        if trial["case"] == "the tick says n":
            assert trial["scores"][similar] == 1.0  # the same text, the same vector
            votes = trial["scores"]["judge"]
            assert len(votes) == 3 and None not in votes
            assert (trial["outcome"] == "pass") == (sum(votes) >= 2)  # the majority
        else:
            assert trial["outcome"] == "fail" and trial["scores"][similar] < 0.8
            assert "below 0.8" in trial["wrong"][0] and "judge" not in trial["scores"]
    spread = judged["judge"]
    assert spread["trials"] == 6 and spread["votes"] == 18
    assert 0 < spread["split"] <= 6 and 2 / 3 <= spread["agreement"] < 1
    assert unlike["judge"] is None and unlike["passed"] == 0
    assert code_text == 0 and f"split on {spread['split']}, agreement" in out
    assert html.read_text().startswith("<!doctype html>")


async def test_eval_up_starts_a_rig_of_its_own_and_stops_it(rig: Deployment) -> None:
    """`--up` runs the suite on a `rig up` of its own (its own nats-server and store),
    not on the Rig the environment names, and removes it after."""
    suite = str(ROOT / "examples" / "evals" / "refund.toml")
    code, out, err = await rig_cli(
        rig, "eval", "run", suite, "--up", "--trials", "3", "--target", "0.5", "--json"
    )
    assert code == 0, (err, out)
    assert "side effects are real" not in err  # its own Rig: nothing to warn of
    result = json.loads(out)
    assert result["verdict"] == "pass" and (result["passed"], result["scored"]) == (6, 6)
    assert await rig.client.jobs() == []  # none of them ran on the environment's Rig
    assert list(rig.home.glob("up-*")) == []  # its home is gone
    code, _, err = await rig_cli(rig, "eval", "run", suite, "--up-config", "x.toml")
    assert code == 2 and "--up-config goes with --up" in err
