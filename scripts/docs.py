"""Rewrite the generated parts of docs/ from the code: the CLI reference (the parser),
the HTTP routes (`ROUTES`), the settings (`SETTINGS`) and the role table (`rig roles`).
Each sits between `<!-- NAME -->` and `<!-- /NAME -->`; tests/unit/test_readme.py and
tests/unit/test_settings.py fail when one differs from what this writes.

    scripts/docs        # after changing a command, a route, a setting or a grant
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.cli.reference import markdown as cli  # noqa: E402
from actors.gateway.reference import markdown as routes  # noqa: E402
from actors.runtime.settings import reference as settings  # noqa: E402


def roles() -> str:
    env = {k: v for k, v in os.environ.items() if k != "RIG_PREFIX"}  # the default names
    rig = Path(sys.executable).parent / "rig"
    return subprocess.run(
        [rig, "roles"], capture_output=True, text=True, check=True, cwd=ROOT, env=env, timeout=60
    ).stdout


BLOCKS = {
    ("docs/reference/cli.md", "rig cli"): cli,
    ("docs/reference/http-api.md", "rig routes"): routes,
    ("docs/reference/configuration.md", "rig settings"): settings,
    ("docs/design/security.md", "rig roles"): roles,
}


def parts(text: str, marker: str) -> tuple[str, str, str]:
    """`text` around its generated block `marker`: what is before, the block, what is after."""
    head, rest = text.split(f"<!-- {marker} -->\n", 1)
    block, tail = rest.split(f"<!-- /{marker} -->", 1)
    return head, block, tail


def shown(page: str, marker: str) -> str:
    """What page `page` (from the project's root) shows in its generated block `marker`."""
    return parts((ROOT / page).read_text(), marker)[1]


def main() -> None:
    for (page, marker), make in BLOCKS.items():
        path = ROOT / page
        text = path.read_text()
        head, _, tail = parts(text, marker)
        new = f"{head}<!-- {marker} -->\n{make()}<!-- /{marker} -->{tail}"
        if new != text:
            path.write_text(new)
            print(f"rewrote {page} ({marker})")


if __name__ == "__main__":
    main()
