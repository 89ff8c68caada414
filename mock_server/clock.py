"""The mock's clock: the time the world lives in, shared by every worker process.

Mock time runs at SPEED times real time from an anchor (at real time `wall_ms` the mock's time was `base_ms`), so
every process computes the same "now" from the same three numbers, kept in the store's meta table. Speed 1 is real
time (for people), 0 a stopped clock that only the admin API moves (for tests). Mock time never runs backwards,
even if the machine's clock does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import orjson

MAX_SPEED = 1_000_000.0
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Clock:
    base_ms: int  # mock time (ms since the Unix epoch) at real time wall_ms
    wall_ms: int
    speed: float  # mock milliseconds per real millisecond
    configured: float  # the speed the mock was started with (--clock-speed); a restart with another one re-anchors

    @classmethod
    def start(cls, speed: float, now_wall: int | None = None) -> "Clock":
        """A clock that shows real time now and runs at SPEED."""
        now_wall = wall_ms() if now_wall is None else now_wall
        return cls(now_wall, now_wall, speed, speed)

    def now_ms(self, now_wall: int | None = None) -> int:
        now_wall = wall_ms() if now_wall is None else now_wall
        return self.base_ms + int(max(0, now_wall - self.wall_ms) * self.speed)

    def advanced(self, ms: int, now_wall: int | None = None) -> "Clock":
        now_wall = wall_ms() if now_wall is None else now_wall
        return replace(self, base_ms=self.now_ms(now_wall) + ms, wall_ms=now_wall)

    def with_speed(self, speed: float, now_wall: int | None = None, configured: float | None = None) -> "Clock":
        now_wall = wall_ms() if now_wall is None else now_wall
        return Clock(self.now_ms(now_wall), now_wall, speed, self.configured if configured is None else configured)

    def dumps(self) -> str:
        return orjson.dumps({"base": self.base_ms, "wall": self.wall_ms, "speed": self.speed,
                             "configured": self.configured}).decode()

    @classmethod
    def loads(cls, text: str) -> "Clock":
        raw = orjson.loads(text)
        return cls(int(raw["base"]), int(raw["wall"]), float(raw["speed"]), float(raw["configured"]))


def to_datetime(ms: int, tz: timezone) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)


def from_datetime(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)
