"""`rig up`: the server it starts and its config (`up`), roles, accounts and the
server's authorization (`roles`), the local CA (`ca`), and a cluster's health
(`health`).
"""

from __future__ import annotations
