"""The `rig` command (`main`), and the views some verbs draw: `rig top` (`top`), `rig trace`
(`trace`), `rig new` (`scaffold`).
"""

from __future__ import annotations
