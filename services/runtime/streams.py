"""Reading a JetStream pull consumer the way every consumer here does."""

from __future__ import annotations

from typing import Any

from nats.errors import TimeoutError as NatsTimeout


async def fetch_ready(sub: Any, most: int) -> list[Any]:
    """The messages ready now, up to `most` (waiting a few ms for a fuller fetch); when there
    are none, the next one as soon as it comes, so a lone message is not held back. Raises
    NATS' timeout when nothing came within a second."""
    try:
        return await sub.fetch(most, timeout=0.01)
    except (NatsTimeout, TimeoutError):
        pass
    return await sub.fetch(1, timeout=1.0)
