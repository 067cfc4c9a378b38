"""Sending a request again after a "not now" answer (429 / 503), and the one-line error once that is given up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import EndpointError
from .endpoint_errors import EndpointTarget, endpoint_error, retry_delay

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Retries:
    """Up to ``max_retries`` retries of a request to ``target``; ``secrets`` are blanked from the final error."""

    max_retries: int
    target: EndpointTarget
    secrets: Sequence[str] = ()

    def call(self, send: Callable[[], _T]) -> _T:
        """``send()``, retried while the server says "not now".

        Raises:
            EndpointError: the request failed for good (or the server asked for a wait too long to block on).
        """
        attempt = 0
        while True:
            try:
                return send()
            except EndpointError:
                raise
            except Exception as exc:
                time.sleep(self._delay_or_raise(exc, attempt))
                attempt += 1

    async def acall(self, send: Callable[[], Awaitable[_T]]) -> _T:
        """``call`` for a coroutine; the waits do not block the event loop."""
        attempt = 0
        while True:
            try:
                return await send()
            except EndpointError:
                raise
            except Exception as exc:
                await asyncio.sleep(self._delay_or_raise(exc, attempt))
                attempt += 1

    def error(self, exc: BaseException) -> EndpointError:
        """``exc`` as the one-line EndpointError a user reads."""
        return endpoint_error(exc, self.target, self.secrets)

    def _delay_or_raise(self, exc: Exception, attempt: int) -> float:
        delay = retry_delay(exc, attempt) if attempt < self.max_retries else None
        if delay is None:
            raise self.error(exc) from exc
        logger.info("%s answered %s; retrying in %.1f s", self.target.url, type(exc).__name__, delay)
        return delay
