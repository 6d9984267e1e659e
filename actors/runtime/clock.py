"""The NATS servers' clock, as this process sees it.

Every JetStream message carries when its stream stored it, by the server's clock. A
message delivered for the first time arrives milliseconds after that, so the smallest
`received - stored` over the last few seconds is this process's clock minus the
servers' (plus a transit it cannot tell apart). `now()` is this process's clock less that
offset: the time the rest of the deployment agrees on, even while this host's clock is
minutes off (a jump, an NTP step, a VM paused and resumed).

A clock that jumps back is seen at the next message (a smaller offset wins at once); one
that jumps ahead after `WINDOW_S`, when the older, smaller offsets have left the window.
With no message yet, the offset is 0 (the process's own clock).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 10.0


class ServerClock:
    def __init__(
        self, window: float = WINDOW_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._monotonic = monotonic
        # (monotonic time, offset), offsets increasing: the front is the window's minimum.
        self._offsets: deque[tuple[float, float]] = deque()

    def observe(self, received: float, stored: float) -> None:
        """A message delivered for the first time: received at `received` (this clock),
        stored at `stored` (the server's)."""
        offset = received - stored
        seen = self._monotonic()
        offsets = self._offsets
        while offsets and offsets[-1][1] >= offset:
            offsets.pop()
        offsets.append((seen, offset))
        while offsets[0][0] < seen - self.window:
            offsets.popleft()

    def offset(self) -> float:
        """This process's clock minus the servers' (0 until a message came)."""
        return self._offsets[0][1] if self._offsets else 0.0

    def now(self) -> float:
        return time.time() - self.offset()


SERVER_CLOCK = ServerClock()  # the process's own: its actors' messages feed it
