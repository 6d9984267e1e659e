"""`rig eval run --html FILE`: an eval's report as one self-contained HTML page.

Two pictures drawn as inline SVG (per-case success with Wilson 95% error bars against
the target; the pass^k curves), the table the terminal shows, what went wrong, and every
trial (its seed and job id, to replay it). No script, no stylesheet or font from
elsewhere: the page fetches nothing when it is opened.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from actors.evals.run import CaseReport, Comparison, Report, render
from actors.evals.stats import wilson

# Colours that stay apart for the common kinds of colour blindness (Okabe and Ito).
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000")

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 64rem;
       padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
.verdict { font-weight: 600; padding: .5rem .8rem; border-radius: 4px; }
.pass { background: #e3f4e8; } .fail { background: #fbe4e4; }
.inconclusive, .none { background: #f3efe0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .6rem; border-bottom: 1px solid #ddd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; }
code { font-size: 12px; }
"""


def html_report(result: Report, comparison: Comparison | None = None) -> str:
    """The page, as text."""
    verdict = result.gate.verdict if result.gate else "none"
    headline = render(result).splitlines()[-1] if result.gate else "no target: no gate"
    if comparison is not None and comparison.regressions:
        verdict = "fail"
        headline = (
            f"FAIL: {len(comparison.regressions)} significant regression(s) against the "
            f"baseline; {headline}"
        )
    low, high = wilson(result.passed, result.scored)
    rate = result.passed / result.scored if result.scored else 0.0
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rig eval {escape(result.agent)}: {escape(verdict)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>rig eval: agent <code>{escape(result.agent)}</code></h1>",
        f'<p class="verdict {escape(verdict)}" id="verdict">{escape(headline)}</p>',
        f"<p>{result.passed} of {result.scored} scored trials passed ({rate:.1%}; Wilson 95% "
        f"[{low:.3f}, {high:.3f}]); {result.infra} infrastructure failure(s), not counted"
        + (f"; seed {result.seed}" if result.seed is not None else "")
        + ".</p>",
        "<h2>Success per case</h2>",
        _rates_svg(result.cases, result.target),
        "<h2>pass^k: the chance that k trials in a row all pass</h2>",
        _pass_k_svg(result.cases),
        "<h2>Cases</h2>",
        _cases_table(result, comparison),
    ]
    parts += _failures(result)
    parts += [
        "<h2>Every trial</h2>",
        f"<details><summary>{len(result.trials)} trials: case, seed, job, outcome, path</summary>",
        _trials_table(result),
        "</details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _rates_svg(cases: list[CaseReport], target: float | None) -> str:
    """One row per case: the rate as a dot, the Wilson interval as a bar, the target as
    a dashed line."""
    row, left, width = 28, 250, 460
    height = 30 + row * len(cases) + 24

    def x(value: float) -> float:
        return left + value * width

    out = [
        f'<svg id="rates" role="img" width="{left + width + 40}" height="{height}" '
        f'viewBox="0 0 {left + width + 40} {height}">',
        "<title>Per-case success rate with its Wilson 95% interval</title>",
    ]
    axis_y = 30 + row * len(cases)
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<line x1="{x(tick):.1f}" y1="20" x2="{x(tick):.1f}" y2="{axis_y}" stroke="#eee"/>'
            f'<text x="{x(tick):.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:g}</text>'
        )
    if target is not None:
        out.append(
            f'<line class="target" x1="{x(target):.1f}" y1="14" x2="{x(target):.1f}" '
            f'y2="{axis_y}" stroke="#c00" stroke-dasharray="4 3"/>'
            f'<text x="{x(target):.1f}" y="11" text-anchor="middle" fill="#c00">'
            f"target {target:g}</text>"
        )
    for i, case in enumerate(cases):
        y = 30 + row * i + row / 2
        name = case.name if len(case.name) <= 31 else case.name[:30] + "…"
        out.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{escape(name)}</text>')
        if not case.scored:
            out.append(f'<text x="{left}" y="{y + 4:.1f}">no scored trials</text>')
            continue
        rate = case.passed / case.scored
        tip = (
            f"{case.name}: {case.passed}/{case.scored} = {rate:.1%}, "
            f"95% [{case.low:.3f}, {case.high:.3f}]"
        )
        out.append(
            f'<g class="case"><title>{escape(tip)}</title>'
            f'<line class="errorbar" x1="{x(case.low):.1f}" y1="{y:.1f}" x2="{x(case.high):.1f}" '
            f'y2="{y:.1f}" stroke="#0072B2" stroke-width="2"/>'
            f'<line x1="{x(case.low):.1f}" y1="{y - 6:.1f}" x2="{x(case.low):.1f}" '
            f'y2="{y + 6:.1f}" stroke="#0072B2" stroke-width="2"/>'
            f'<line x1="{x(case.high):.1f}" y1="{y - 6:.1f}" x2="{x(case.high):.1f}" '
            f'y2="{y + 6:.1f}" stroke="#0072B2" stroke-width="2"/>'
            f'<circle cx="{x(rate):.1f}" cy="{y:.1f}" r="4.5" fill="#0072B2"/></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _pass_k_svg(cases: list[CaseReport]) -> str:
    """pass^k against k for each case, on shared axes, with a legend."""
    left, top, width, height = 50, 16, 460, 220
    longest = max((len(case.pass_k) for case in cases), default=0)
    if longest == 0:
        return "<p>No scored trials: no curve.</p>"
    span = max(1, longest - 1)

    def x(k: int) -> float:
        return left + (k - 1) / span * width

    def y(p: float) -> float:
        return top + (1 - p) * height

    legend_x = left + width + 20
    out = [
        f'<svg id="pass-k" role="img" width="{legend_x + 240}" height="{top + height + 40}" '
        f'viewBox="0 0 {legend_x + 240} {top + height + 40}">',
        "<title>pass^k for k = 1 to n, per case</title>",
    ]
    for p in (0, 0.5, 1.0):
        out.append(
            f'<line x1="{left}" y1="{y(p):.1f}" x2="{left + width}" y2="{y(p):.1f}" '
            f'stroke="#eee"/><text x="{left - 6}" y="{y(p) + 4:.1f}" text-anchor="end">'
            f"{p:g}</text>"
        )
    for k in sorted({1, longest, *range(5, longest, 5)}):
        out.append(f'<text x="{x(k):.1f}" y="{top + height + 16}" text-anchor="middle">{k}</text>')
    out.append(
        f'<text x="{left + width / 2}" y="{top + height + 34}" text-anchor="middle">k</text>'
    )
    for i, case in enumerate(cases):
        if not case.pass_k:
            continue
        colour = _PALETTE[i % len(_PALETTE)]
        points = " ".join(f"{x(k):.1f},{y(p):.1f}" for k, p in enumerate(case.pass_k, 1))
        out.append(
            f'<polyline class="curve" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{points}"><title>{escape(case.name)}</title></polyline>'
        )
        ly = top + 14 * i + 6
        name = case.name if len(case.name) <= 30 else case.name[:29] + "…"
        out.append(
            f'<line x1="{legend_x}" y1="{ly}" x2="{legend_x + 16}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<text x="{legend_x + 22}" y="{ly + 4}">{escape(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _cases_table(result: Report, comparison: Comparison | None) -> str:
    changes = {c.case: c for c in comparison.changes} if comparison is not None else {}
    head = (
        "<tr><th>case</th><th class=num>passed</th><th class=num>rate</th>"
        "<th>Wilson 95%</th><th class=num>infra</th><th>flaky</th><th>judge</th>"
        + ("<th>against the baseline</th>" if comparison is not None else "")
        + "</tr>"
    )
    rows = [head]
    for case in result.cases:
        rate = f"{case.passed / case.scored:.0%}" if case.scored else "-"
        judge = ""
        if case.judge is not None:
            judge = f"split on {case.judge.split}/{case.judge.trials}, agreement " + (
                f"{case.judge.agreement:.2f}"
            )
        cells = [
            f"<td>{escape(case.name)}</td>",
            f"<td class=num>{case.passed}/{case.scored}</td>",
            f"<td class=num>{rate}</td>",
            f"<td>[{case.low:.3f}, {case.high:.3f}]</td>",
            f"<td class=num>{case.infra}</td>",
            f"<td>{'yes' if case.flaky else ''}</td>",
            f"<td>{escape(judge)}</td>",
        ]
        if comparison is not None:
            change = changes.get(case.name)
            said = ""
            if change is not None:
                said = (
                    f"{change.direction}: {change.before[0]}/{change.before[1]} → "
                    f"{change.after[0]}/{change.after[1]}, "
                    + (
                        f"McNemar p = {change.p_value:.4f} ({change.pairs} paired trials)"
                        if change.test == "mcnemar"
                        else f"Fisher p = {change.p_value:.4f}"
                    )
                )
            cells.append(f"<td>{escape(said)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<table id="cases">' + "".join(rows) + "</table>"


def _failures(result: Report) -> list[str]:
    """What went wrong, per case: each reason with how often, and jobs to look at."""
    out: list[str] = []
    for case in result.cases:
        mine = [t for t in result.trials if t.case == case.name and t.outcome != "pass"]
        if not mine:
            continue
        reasons: Counter[tuple[str, str]] = Counter()
        jobs: dict[tuple[str, str], list[str]] = {}
        for trial in mine:
            for reason in trial.wrong or ["(no reason recorded)"]:
                key = (trial.outcome, reason)
                reasons[key] += 1
                jobs.setdefault(key, []).append(trial.job_id)
        if not out:
            out.append("<h2>What went wrong</h2>")
        out.append(f"<h3>{escape(case.name)}</h3><ul>")
        for (outcome, reason), count in reasons.most_common():
            seen = ", ".join(f"<code>{escape(j)}</code>" for j in jobs[(outcome, reason)][:3] if j)
            kind = "infrastructure" if outcome == "infra" else "agent"
            tail = f" — {seen}" if seen else ""
            out.append(f"<li>{count} trial(s), {kind}: {escape(reason)}{tail}</li>")
        out.append("</ul>")
    return out


def _trials_table(result: Report) -> str:
    rows = [
        "<tr><th>case</th><th class=num>#</th><th class=num>seed</th><th>job</th>"
        "<th>outcome</th><th>path</th><th>scores</th></tr>"
    ]
    for trial in result.trials:
        scores: dict[str, Any] = trial.scores
        rows.append(
            f"<tr><td>{escape(trial.case)}</td><td class=num>{trial.index}</td>"
            f"<td class=num>{trial.seed}</td><td><code>{escape(trial.job_id)}</code></td>"
            f"<td>{escape(trial.outcome)}</td><td>{escape(' → '.join(trial.path))}</td>"
            f"<td>{escape(', '.join(f'{k}: {v}' for k, v in scores.items()))}</td></tr>"
        )
    return '<table id="trials">' + "".join(rows) + "</table>"
