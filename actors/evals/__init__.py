"""Evals as statistical tests: running trials (`run`), their statistics (`stats`, pure),
and the HTML report (`report`).
"""

from __future__ import annotations
