"""The eval's HTML report in a real browser (Debian's chromium): it draws what the
report says, escapes what the suite says, and fetches nothing when opened."""

from __future__ import annotations

from pathlib import Path

from actors.evals.report import html_report
from actors.evals.run import Report, Suite, Trial, render, report
from actors.evals.stats import pass_hat_curve, wilson
from tests.support.browser import browser_page

HOSTILE = 'refund <b>&amp;</b> "quotes" <script>alert(1)</script>'


def _report() -> Report:
    suite = Suite.model_validate(
        {
            "agent": "refund",
            "case": [
                {"name": "always", "input": {}},
                {"name": HOSTILE, "input": {}},
                {"name": "never", "input": {}},
            ],
        }
    )
    trials = [Trial("always", i, job_id=f"a{i}", outcome="pass", seed=i) for i in range(20)]
    trials += [
        Trial(
            HOSTILE,
            i,
            job_id=f"h{i}",
            outcome="pass" if i < 15 else "fail" if i < 20 else "infra",
            wrong=[]
            if i < 15
            else ["status failed, expected succeeded"]
            if i < 20
            else ["model outage at step 1: every provider failed"],
            seed=100 + i,
        )
        for i in range(22)
    ]
    trials += [
        Trial("never", i, job_id=f"n{i}", outcome="fail", wrong=["never entered 'done'"])
        for i in range(5)
    ]
    return report(suite, trials, 0.8, seed=42)


async def test_the_html_report_draws_the_rates_and_curves_and_fetches_nothing(
    tmp_path: Path,
) -> None:
    result = _report()
    page_file = tmp_path / "report.html"
    page_file.write_text(html_report(result))
    url = page_file.as_uri()
    async with browser_page() as page:
        fetched: list[str] = []
        page.on("request", lambda request: fetched.append(request.url))
        await page.goto(url)
        assert fetched == [url]  # the page alone: no script, style, font or image from elsewhere
        verdict = await page.locator("#verdict").text_content()
        assert verdict == render(result).splitlines()[-1]
        # 35 of 45: [0.637, 0.875] straddles 0.8.
        assert verdict is not None and verdict.startswith("INCONCLUSIVE")

        # One error bar a case, from the Wilson bounds, the dot at the rate (x = 250 + 460 v).
        bars = page.locator("#rates g.case")
        assert await bars.count() == 3
        for i, (passed, scored) in enumerate([(20, 20), (15, 20), (0, 5)]):
            low, high = wilson(passed, scored)
            line = bars.nth(i).locator("line.errorbar")
            assert abs(float(await line.get_attribute("x1") or 0) - (250 + 460 * low)) < 0.1
            assert abs(float(await line.get_attribute("x2") or 0) - (250 + 460 * high)) < 0.1
            dot = bars.nth(i).locator("circle")
            assert (
                abs(float(await dot.get_attribute("cx") or 0) - (250 + 460 * passed / scored)) < 0.1
            )
            box = await line.bounding_box()
            assert box is not None and box["width"] > 0  # drawn, not just present
        target = page.locator("#rates line.target")
        assert abs(float(await target.get_attribute("x1") or 0) - (250 + 460 * 0.8)) < 0.1

        # pass^k curves: one a case, k = 1..n, y = 16 + 220 (1 - pass^k).
        curves = page.locator("#pass-k polyline.curve")
        assert await curves.count() == 3
        points = (await curves.nth(1).get_attribute("points") or "").split()
        curve = pass_hat_curve(15, 20)
        assert len(points) == 20
        for point, value in zip(points, curve, strict=True):
            assert abs(float(point.split(",")[1]) - (16 + 220 * (1 - value))) < 0.1

        # The suite's words are text, never markup.
        cells = page.locator("#cases td:first-child")
        assert await cells.nth(1).text_content() == HOSTILE
        assert await page.locator("#cases b, body script").count() == 0
        # Every trial is listed (a header row, then one a trial), with its seed and job.
        assert await page.locator("#trials tr").count() == 1 + 47
        assert "h3" in (await page.locator("#trials").text_content() or "")
        # What went wrong, the agent's apart from the infrastructure's.
        told = await page.locator("li").all_text_contents()
        assert "5 trial(s), agent: status failed, expected succeeded — h15, h16, h17" in told
        assert any(t.startswith("2 trial(s), infrastructure: model outage") for t in told)
        shot = await page.screenshot(full_page=True)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
