"""An event loop of the client's own in a daemon thread, for the synchronous classes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def first(self, make: Callable[[], Awaitable[T]]) -> T:
        """Make the client on this loop (aiokafka's clients bind to the loop they are made
        on) and return it; the loop ends when that fails."""
        async def on_loop() -> T:
            return await make()

        try:
            return self.run(on_loop())
        except BaseException:
            self.close()
            raise

    def last(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run the coroutine that closes the client, then end the loop (also on failure)."""
        try:
            self.run(coro)
        finally:
            self.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
