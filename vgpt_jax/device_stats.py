"""What the devices and the compiler report about a run: memory in use and at peak, and the
seconds spent compiling (XLA backend compiles, from JAX's monitoring events)."""

from __future__ import annotations

import time
from types import TracebackType

import jax

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def device_memory_gib() -> dict[str, float]:
    """``memory_gib``: in use now; ``peak_memory_gib``: the most this process has ever held, which
    is what must fit. The largest over this process's devices; 0 where the backend keeps no
    statistics (CPU)."""
    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    return {
        "memory_gib": max(s.get("bytes_in_use", 0) for s in stats) / 2**30,
        "peak_memory_gib": max(s.get("peak_bytes_in_use", 0) for s in stats) / 2**30,
    }


class CompileClock:
    """``with CompileClock() as clock:`` -> ``clock.compile_s``, the XLA compile seconds of the
    block, and ``clock.wall_s``, its wall time."""

    def __init__(self) -> None:
        self.compile_s = 0.0
        self.wall_s = 0.0

    def _listen(self, event: str, duration: float, **_) -> None:
        if event == _BACKEND_COMPILE_EVENT:
            self.compile_s += duration

    def __enter__(self) -> CompileClock:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.wall_s = time.perf_counter() - self._start
        jax.monitoring.unregister_event_duration_listener(self._listen)
