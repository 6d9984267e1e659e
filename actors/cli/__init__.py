"""The `rig` command: `main` (the top parser, exit codes handled), one module per family of
commands with its parsers beside its handlers (`jobs`, `deploy`, `operate`, `models`),
what they share (`common`), and the views some verbs draw: `rig top` (`top`), `rig trace`
(`trace`), `rig new` (`scaffold`).
"""

from __future__ import annotations
