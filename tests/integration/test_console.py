"""The web console in a real browser (Debian's chromium, driven by Playwright), against a
real `rig up` of the refund example with its gateway, an API key and `rig chaos-llm`.

The screenshots go to `$RIG_SCREENSHOTS` (the README's come from
`RIG_SCREENSHOTS=docs/console scripts/test tests/integration/test_console.py`), else to a temporary
folder: they are taken either way."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, get_args

import aiohttp
import pytest
from playwright.async_api import Dialog, Page, Request, expect

from actors.deploy.up import free_port
from actors.examples.research import RESEARCH_ACTORS
from actors.gateway.keys import add_key
from actors.testing import Deployment
from protocols import JobStatusName
from tests.conftest import ROOT, bank_attempts, refund_rows
from tests.integration.test_cli import run_rig
from tests.integration.test_gateway import start_gateway
from tests.integration.test_llm import llm_config, start_chaos
from tests.support.browser import browser_page

pytestmark = pytest.mark.integration

ACTORS = {
    "actors:Supervisor": 1,
    "actors.examples.refund:RefundAgent": 1,  # rule-routed: parks a refund over 500
    "actors.examples.refund:RefundLLMAgent": 1,  # routed by `rig chaos-llm`, streaming
    "actors.examples.refund:RefundTools": 1,
    "actors.examples.refund:RefundChecks": 1,
    "actors:Gateway": 1,
}
SMALL = {"order_id": "A-1001", "amount": 25, "reason": "arrived damaged"}
LARGE = {"order_id": "A-1002", "amount": 650, "reason": "never arrived"}
WAIT_MS = 60_000


async def test_the_console_follows_jobs_live_and_a_person_approves_from_the_inbox(
    rig: Deployment, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("RIG_SCREENSHOTS") or tmp_path)
    if not shots.is_absolute():
        shots = ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    chaos = await start_chaos("--main-path", "1.0", "--latency-p50", "0.8", "--seed", "5")
    llm_config(rig, chaos.url, section="refund-llm", stream=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = add_key(rig.home / "gateway-keys", "console")  # security on: the console asks
    rig.extra_env["RIG_GATEWAY_PORT"] = str(port)
    ready = await rig.nc.subscribe(rig.names.actor_ready)
    up = await rig.rig_up(ACTORS)
    requests: list[Request] = []
    try:
        for _ in ACTORS:
            await ready.next_msg(timeout=60)
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http,
            browser_page() as page,
        ):
            page.on("request", lambda request: requests.append(request))
            await page.set_viewport_size({"width": 1366, "height": 860})
            await page.goto(f"{base}/")  # leads to /console/, which asks for the key
            await page.fill("#key", key)
            await page.click("#login button[type=submit]")
            await expect(page.locator("#jobs")).to_be_visible()

            # A job submitted over the API appears and ends without a reload.
            job_id = await submit(http, base, "refund", SMALL)
            row = page.locator(f'#jobs tr[data-job="{job_id}"]')
            await expect(row).to_be_visible(timeout=WAIT_MS)
            await expect(row.locator(".status")).to_have_text("succeeded", timeout=WAIT_MS)
            # Three more: an order that does not exist, one in transit, a small one.
            for order_id, amount in (("Z-77", 40), ("A-1003", 30), ("A-1006", 12.5)):
                more = await submit(http, base, "refund", {"order_id": order_id, "amount": amount})
                await expect(page.locator(f'#jobs tr[data-job="{more}"] .status')).to_have_text(
                    "succeeded", timeout=WAIT_MS
                )
            await expect(page.locator('.counts [data-status="succeeded"]')).to_have_text(
                "succeeded 4"
            )
            assert await page.locator("#jobs tbody tr").count() == 4
            await page.screenshot(path=shots / "jobs.png")

            # Its page: the path on the graph, and the journal as `rig watch` prints it.
            await row.locator("a").click()
            await expect(page.locator('#timeline li[data-type="status"]').last).to_contain_text(
                "succeeded", timeout=WAIT_MS
            )
            await expect(page.locator('#graph .node.current[data-state="done"]')).to_be_visible()
            for state in ("triage", "review", "refunding", "done"):
                visited = page.locator(f'#graph .node.visited[data-state="{state}"]')
                await expect(visited).to_be_visible()
            for edge in ("triage/lookup", "review/approve", "refunding/refund"):
                taken = page.locator(f'#graph .edge.taken[data-edge="{edge}"]')
                await expect(taken).to_be_visible()
            assert await page.locator("#graph .edge.taken").count() == 3
            assert await drawing_problems(page, "#graph svg") == []
            code, out, err = await run_rig(rig.env, "watch", job_id, "--json")
            assert code == 0, err
            watched = [json.loads(line) for line in out.splitlines()]
            shown = await timeline(page)
            assert shown == [(e["seq"], e["type"]) for e in watched]
            result = json.loads(await page.locator("#result").text_content() or "")
            assert result["results"]["issue_refund"]["status"] == "issued"
            await page.screenshot(path=shots / "job.png", full_page=True)

            # A refund over 500 parks; the inbox shows why; approving it resolves it.
            parked = await submit(http, base, "refund", LARGE)
            await page.click('nav a[data-page="inbox"]')
            card = page.locator(f'#inbox article[data-job="{parked}"]')
            await expect(card).to_be_visible(timeout=WAIT_MS)
            await expect(card.locator(".reason")).to_contain_text("human")
            await expect(page.locator("#inbox-count")).to_have_text("1", timeout=WAIT_MS)
            await card.locator('input[name="by"]').fill("support lead")
            await card.locator('input[name="note"]').fill("a loyal customer")
            await page.screenshot(path=shots / "inbox.png")
            # From the keyboard: the edge's button takes the focus and Enter presses it.
            await card.locator('button[data-edge="approve"]').focus()
            await page.keyboard.press("Enter")
            await expect(card.locator(".outcome")).to_contain_text("Took approve", timeout=WAIT_MS)
            # The notice follows the job past the resolve, to its end (never a status it
            # left), and the inbox's count in the menu goes with it.
            await expect(card.locator(".outcome")).to_contain_text(
                "the job ended succeeded in done", timeout=WAIT_MS
            )
            await expect(page.locator("#inbox-count")).to_be_hidden(timeout=WAIT_MS)
            await card.locator(".outcome a").click()
            await expect(page.locator(".facts .status")).to_have_text("succeeded", timeout=WAIT_MS)
            await expect(page.locator('#timeline li[data-type="resolved"]')).to_contain_text(
                "support lead took approve: a loyal customer"
            )
            [refund] = [row for row in refund_rows(rig.home) if row[0] == parked]
            assert refund[1:] == ("A-1002", 650.0)
            assert set(bank_attempts(rig.home).values()) == {1}  # each refund asked once

            # Cancel, from a parked job's page (after the browser's confirm).
            doomed = await submit(http, base, "refund", {"order_id": "A-1004", "amount": 600})
            await page.goto(f"{base}/console/#/jobs/{doomed}")
            await expect(page.locator(".facts .status")).to_have_text(
                "waiting_human", timeout=WAIT_MS
            )
            page.once("dialog", accept)
            await page.click("#cancel")
            await expect(page.locator(".facts .status")).to_have_text("cancelled", timeout=WAIT_MS)
            assert not [row for row in refund_rows(rig.home) if row[0] == doomed]

            # A model's answers stream onto the page, in order.
            streamed = await submit(http, base, "refund-llm", SMALL)
            await page.goto(f"{base}/console/#/jobs/{streamed}")
            await expect(page.locator(".facts .status")).to_have_text("succeeded", timeout=WAIT_MS)
            said = await page.locator("#tokens .answer .text").all_text_contents()
            steps = [int(s or 0) for s in await answer_steps(page)]
            decided = dict(await decisions(http, base, streamed))
            # The page may have opened during the first answer: each step's that it saw
            # whole is the answer the agent decided by, in order.
            assert steps == sorted(steps) and steps[-1] == max(decided)
            for step, text in zip(steps[1:], said[1:], strict=True):
                assert json.loads(text)["route"]["edge"] == decided[step]
            assert decided[steps[-1]] == "refund"

            # Agents: each graph, its live processes, and the model provider's health.
            await page.click('nav a[data-page="agents"]')
            provider = page.locator('#providers [data-provider="chaos"]')
            await expect(provider).to_contain_text("up", timeout=WAIT_MS)
            await expect(provider).to_contain_text("3 calls")
            await expect(page.locator('#agents [data-agent="refund"] .live')).to_have_text(
                "1 live process"
            )
            # The graph comes by a request of its own, after the card.
            await expect(page.locator('#agents [data-agent="refund"] svg.graph')).to_have_count(1)
            assert await drawing_problems(page, '#agents [data-agent="refund"] svg.graph') == []
            # The status filter offers every status a job can have, and no other.
            await page.click('nav a[data-page="jobs"]')
            statuses = ["", "active", *get_args(JobStatusName)]
            await expect(page.locator("#status option")).to_have_count(len(statuses))
            offered = await page.locator("#status option").evaluate_all(
                "options => options.map(o => o.value)"
            )
            assert offered == statuses

            # Dark or light, as the system says.
            light = await page.evaluate("getComputedStyle(document.body).backgroundColor")
            await page.emulate_media(color_scheme="dark")
            dark = await page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert (light, dark) == ("rgb(255, 255, 255)", "rgb(13, 17, 23)")
    finally:
        up.terminate()
        await up.wait()
        chaos.proc.terminate()
        await chaos.proc.wait()

    # Nothing the page asked for left the machine: every request went to the gateway.
    assert requests and all(r.url.startswith(f"{base}/") for r in requests), [
        r.url for r in requests if not r.url.startswith(f"{base}/")
    ]
    documents = [r.url for r in requests if r.resource_type == "document"]
    assert documents == [f"{base}/", f"{base}/console/"]  # one page load: the rest is live


RESEARCH = {
    "actors:Supervisor": 1,
    **{target: 1 for target in RESEARCH_ACTORS},
    "actors:Gateway": 1,
}


async def test_the_console_draws_a_job_tree(rig: Deployment, tmp_path: Path) -> None:
    """A triage job's page lists the child jobs it started, each with its status, as
    they end; a child's page names the job that started it."""
    shots = Path(os.environ.get("RIG_SCREENSHOTS") or tmp_path)
    if not shots.is_absolute():
        shots = ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = add_key(rig.home / "gateway-keys", "console")
    rig.extra_env["RIG_GATEWAY_PORT"] = str(port)
    up = await rig.up(*RESEARCH)
    assert up.returncode is None
    brief = {"topic": "the sky", "questions": ["why is the sky blue", "what makes a rainbow"]}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http,
        browser_page() as page,
    ):
        job_id = await submit(http, base, "triage", brief)
        await page.set_viewport_size({"width": 1366, "height": 860})
        await page.goto(f"{base}/")
        await page.fill("#key", key)
        await page.click("#login button[type=submit]")
        await expect(page.locator("#jobs")).to_be_visible()
        await page.goto(f"{base}/console/#/jobs/{job_id}")
        await expect(page.locator(".facts .status")).to_have_text("succeeded", timeout=WAIT_MS)
        children = page.locator("#tree li[data-child]")
        await expect(children).to_have_count(3, timeout=WAIT_MS)
        for n, agent in enumerate(("research", "research", "writer")):
            child = children.nth(n)
            await expect(child.locator(".status")).to_have_text("succeeded", timeout=WAIT_MS)
            await expect(child).to_contain_text(agent)
        await expect(page.locator('#timeline li[data-type="child_started"]')).to_have_count(3)
        await page.screenshot(path=shots / "tree.png", full_page=True)
        await children.nth(2).locator("a").click()
        await expect(page.locator("#tree")).to_contain_text(f"Started by {job_id}")
        await expect(page.locator("#tree")).to_contain_text("edge write")


async def test_the_console_shows_a_thread_its_turns_and_its_summary(
    rig: Deployment, api_key: str
) -> None:
    """A thread's page lists its ended turns in order, with the summary its summarising
    state made of the older ones; a turn's page links back to its thread."""
    await rig.spawn("actors:Supervisor", "tests.support.chat:Compactor")
    base, _ = await start_gateway(rig)
    for n in range(4):  # the fourth summarises the first two (tests/support/chat.py)
        reply = await rig.client.submit("compactor", {"text": f"t{n}"}, thread="conv")
        assert (await rig.client.wait(reply.job_id, timeout=rig.within())).status == "succeeded"
    async with browser_page() as page:
        await page.goto(f"{base}/")
        await page.fill("#key", api_key)
        await page.click("#login button[type=submit]")
        await expect(page.locator("#jobs")).to_be_visible()
        await page.goto(f"{base}/console/#/threads/conv")
        turns = page.locator("#turns li[data-turn]")
        await expect(turns).to_have_count(4, timeout=WAIT_MS)
        for n in range(4):
            await expect(turns.nth(n)).to_contain_text(f'"t{n}"')
        record = await rig.client.thread("conv")
        assert record.summary is not None
        covered = record.summary.through
        await expect(page.locator("#summary h2")).to_have_text(
            f"Summary of the first {covered} turns"
        )
        await expect(page.locator("#thread-summary")).to_contain_text(f'"t{covered - 1}"')
        await turns.nth(3).locator("a").click()
        await expect(page.locator("#thread-link")).to_have_text("conv", timeout=WAIT_MS)
        await expect(page.locator('#timeline li[data-type="compacted"]')).to_have_count(1)


async def test_the_console_lists_schedules_pauses_one_and_runs_one_now(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn("actors:Supervisor", "tests.support.chat:Chatter")
    base, _ = await start_gateway(rig)
    spec = {"agent": "chatter", "input": {"text": "tick"}, "every_s": 3600}
    await rig.client.schedule("add", "hourly", spec)
    async with browser_page() as page:
        await page.goto(f"{base}/")
        await page.fill("#key", api_key)
        await page.click("#login button[type=submit]")
        await expect(page.locator("#jobs")).to_be_visible()
        await page.goto(f"{base}/console/#/schedules")
        row = page.locator('#schedules tr[data-schedule="hourly"]')
        await expect(row).to_contain_text("every 3600 s", timeout=WAIT_MS)
        await row.locator("button.toggle").click()
        await expect(row.locator(".next")).to_have_text("paused", timeout=WAIT_MS)
        await row.locator("button.trigger").click()
        await expect(page.locator(".facts .status")).to_have_text("succeeded", timeout=WAIT_MS)
    [schedule] = (await rig.client.schedule("get", "hourly")).schedules
    assert schedule.paused


# Each edge's path sampled every 2 px: no point inside a box but its own two states'; no
# two labels overlapping, nor a label and a box.
DRAWING_PROBLEMS = """svg => {
  const inside = (p, r) => p.x > r.x + 1 && p.x < r.x + r.width - 1
    && p.y > r.y + 1 && p.y < r.y + r.height - 1;
  const overlap = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width
    && a.y < b.y + b.height && b.y < a.y + a.height;
  const boxes = [...svg.querySelectorAll(".node")].map(
    g => ({ name: g.dataset.state, r: g.querySelector("rect").getBBox() }));
  const problems = [];
  for (const g of svg.querySelectorAll(".edge")) {
    const from = g.dataset.edge.split("/")[0], to = g.dataset.to;
    const path = g.querySelector("path");
    for (let at = 0; at <= path.getTotalLength(); at += 2) {
      const p = path.getPointAtLength(at);
      for (const b of boxes) {
        const own = b.name === from || b.name === to;
        if (!own && inside(p, b.r)) problems.push(`${g.dataset.edge} crosses ${b.name}`);
      }
    }
  }
  const labels = [...svg.querySelectorAll(".edge text")].map(
    t => ({ name: t.parentNode.dataset.edge, r: t.getBBox() }));
  labels.forEach((a, i) => {
    for (const b of labels.slice(i + 1)) {
      if (overlap(a.r, b.r)) problems.push(`labels ${a.name} and ${b.name} overlap`);
    }
    for (const b of boxes) {
      if (overlap(a.r, b.r)) problems.push(`label ${a.name} covers ${b.name}`);
    }
  });
  return [...new Set(problems)];
}"""


async def drawing_problems(page: Page, selector: str) -> list[str]:
    problems: list[str] = await page.locator(selector).evaluate(DRAWING_PROBLEMS)
    return problems


async def accept(dialog: Dialog) -> None:
    await dialog.accept()


async def submit(http: aiohttp.ClientSession, base: str, agent: str, job: dict[str, Any]) -> str:
    async with http.post(f"{base}/v1/jobs", json={"agent": agent, "input": job}) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["job_id"])


async def decisions(http: aiohttp.ClientSession, base: str, job_id: str) -> list[tuple[int, str]]:
    """The job's decisions, (step, edge), from its journal over SSE."""
    found = []
    async with http.get(f"{base}/v1/jobs/{job_id}/events") as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event["type"] == "decision":
                    found.append((event["step"], event["data"].get("edge")))
    return found


async def answer_steps(page: Page) -> list[str | None]:
    return [await a.get_attribute("data-step") for a in await page.locator("#tokens .answer").all()]


async def timeline(page: Page) -> list[tuple[int, str]]:
    """The job page's timeline: (seq, type) of each event shown."""
    shown = []
    for item in await page.locator("#timeline > li").all():
        seq, kind = await item.get_attribute("data-seq"), await item.get_attribute("data-type")
        shown.append((int(seq or 0), kind or ""))
    return shown
