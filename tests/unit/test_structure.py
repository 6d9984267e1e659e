"""The house's plan holds (scripts/structure.py, run by scripts/check), and the check
sees a breach: an import cycle, an import of a higher layer, a long module with no
reason. The pure cores import without nats-py, aiohttp or aiosqlite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.structure import problems
from tests.conftest import ROOT


def test_the_code_keeps_its_layers_and_has_no_cycle() -> None:
    assert problems() == []


def test_the_check_finds_a_cycle_an_upward_import_and_a_long_module(tmp_path: Path) -> None:
    files = {
        "protocols/__init__.py": "",
        "actors/__init__.py": "",
        "actors/runtime/__init__.py": "",
        "actors/runtime/a.py": "from actors.runtime import b\n",
        "actors/runtime/b.py": "import actors.runtime.a\nfrom actors.cli.main import x\n",
        "actors/cli/__init__.py": "",
        "actors/cli/main.py": "x = 1\n" + "y = 2\n" * 1000,
        "actors/jobs/__init__.py": "",
        "actors/jobs/ok.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from actors.cli.main import x\n" + "# Long: a reason\n" * 1001,
    }
    _write(tmp_path, files)
    assert sorted(problems(tmp_path)) == [
        "actors.runtime.b (layer 1) imports actors.cli.main (layer 4)",
        "actors/cli/main.py has 1001 lines and no `# Long:` reason",
        "an import cycle: actors.runtime.a -> actors.runtime.b",
    ]


def test_the_pure_cores_import_without_nats_aiohttp_or_aiosqlite() -> None:
    probe = (
        "import sys\n"
        "import protocols, protocols._permissions, actors.jobs.rules, actors.tools.decisions\n"
        "import actors.evals.stats\n"
        "print(sorted(m for m in ('nats', 'aiohttp', 'aiosqlite') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_check_finds_a_setting_read_outside_settings(tmp_path: Path) -> None:
    files = {
        "protocols/__init__.py": "",
        "actors/__init__.py": "",
        "actors/runtime/__init__.py": "",
        "actors/runtime/settings.py": "import os\nos.environ.get('RIG_HOME')\n",
        "actors/gateway/__init__.py": "",
        "actors/gateway/a.py": "import os\nos.environ.get('RIG_X', '')\nos.getenv('HOME')\n"
        "'RIG_Y' in os.environ\nos.environ['RIG_Z']\nos.environ['RIG_W'] = '1'\n",
        "actors/examples/__init__.py": "",
        "actors/examples/mine.py": "import os\nos.environ.get('RIG_MINE')\n",
    }
    _write(tmp_path, files)
    settings = "settings come from actors.runtime.settings"
    assert sorted(problems(tmp_path)) == [
        f"actors.gateway.a reads RIG_X (line 2): {settings}",
        f"actors.gateway.a reads RIG_Y (line 4): {settings}",
        f"actors.gateway.a reads RIG_Z (line 5): {settings}",
    ]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
