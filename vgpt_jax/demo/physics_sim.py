"""A small 2-D rigid-ball world: gravity, bounces with restitution, ball-ball impacts, rolling, exits.

Units are metres and seconds; y points up and the floor is y = 0. The integrator is semi-implicit
Euler at :data:`PHYSICS_HZ`, a multiple of every benchmark frame rate (8, 16, 24, 30 fps), so each
video frame is an exact simulation step. Pure Python floats: a scene has at most a handful of
balls, where per-step NumPy calls would cost more than the arithmetic.

* A ball is *held* (fixed, an immovable obstacle) until its ``release_time``, then moves with its
  launch velocity: dropped, thrown or rolled in.
* Floor and walls reflect the normal velocity times the ball's restitution; a bounce slower than
  :data:`REST_SPEED` stops, so balls come to rest instead of jittering.
* On the floor a ball rolls without slipping (spin = -vx / r) and loses speed to rolling resistance.
* Two balls that overlap exchange an impulse with the smaller restitution (masses ~ r^2) and are
  pushed apart; a held ball takes no impulse.
* A side without a wall lets balls leave; once past :data:`EXIT_MARGIN` widths outside the world
  they are removed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

GRAVITY = 9.81
PHYSICS_HZ = 480
REST_SPEED = 0.25  # m/s: slower floor impacts end the bouncing
EXIT_MARGIN = 0.5  # widths beyond the world edge after which a ball is gone for good


@dataclasses.dataclass
class Ball:
    x: float
    y: float
    vx: float  # launch velocity, applied at release_time
    vy: float
    radius: float
    restitution: float
    release_time: float = 0.0
    color: tuple[float, float, float] = (1.0, 0.0, 0.0)  # RGB in [0, 1]


@dataclasses.dataclass(frozen=True)
class World:
    width: float
    left_wall: bool = True
    right_wall: bool = True
    rolling_resistance: float = 0.05  # deceleration on the floor, in units of g
    gravity: float = GRAVITY


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Sampled at every step: ``position`` (S, n, 2) m, ``angle`` (S, n) rad, ``present`` (S, n) bool."""

    position: np.ndarray
    angle: np.ndarray
    present: np.ndarray


def step_index(t: float) -> int:
    """Index in a :class:`Trajectory` of the state at time ``t`` (seconds)."""
    return round(t * PHYSICS_HZ)


def simulate(world: World, balls: list[Ball], duration: float) -> Trajectory:
    """Runs the world for ``duration`` seconds; returns ``duration * PHYSICS_HZ + 1`` states."""
    n, steps, dt = len(balls), round(duration * PHYSICS_HZ), 1.0 / PHYSICS_HZ
    x = [b.x for b in balls]
    y = [b.y for b in balls]
    vx, vy, spin, angle = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    radius = [b.radius for b in balls]
    inv_mass = [1.0 / (r * r) for r in radius]
    released, present = [False] * n, [True] * n
    position = np.zeros((steps + 1, n, 2))
    angles = np.zeros((steps + 1, n))
    presence = np.zeros((steps + 1, n), bool)
    for step in range(steps + 1):
        position[step, :, 0], position[step, :, 1] = x, y
        angles[step], presence[step] = angle, present
        t = step * dt
        for i, b in enumerate(balls):
            if not released[i] and t >= b.release_time:
                released[i], vx[i], vy[i] = True, b.vx, b.vy
        for i in range(n):
            if released[i] and present[i]:
                vy[i] -= world.gravity * dt
                x[i] += vx[i] * dt
                y[i] += vy[i] * dt
                angle[i] += spin[i] * dt
                _floor_and_walls(world, balls[i], i, x, y, vx, vy, spin, dt, present)
        for i in range(n):
            for j in range(i + 1, n):
                if present[i] and present[j]:
                    _collide(i, j, balls, x, y, vx, vy, radius, inv_mass, released)
    return Trajectory(position, angles, presence)


def _floor_and_walls(world: World, ball: Ball, i: int, x, y, vx, vy, spin, dt: float, present) -> None:
    r, e = ball.radius, ball.restitution
    if y[i] <= r:
        y[i] = r
        if vy[i] < 0:
            vy[i] = -e * vy[i] if -vy[i] * e > REST_SPEED else 0.0
        if vy[i] == 0.0:  # rolling: no slip, resistance slows it down
            slow = world.rolling_resistance * world.gravity * dt
            vx[i] = math.copysign(max(abs(vx[i]) - slow, 0.0), vx[i])
            spin[i] = -vx[i] / r
    if world.left_wall and x[i] < r:
        x[i], vx[i] = r, abs(vx[i]) * e
    if world.right_wall and x[i] > world.width - r:
        x[i], vx[i] = world.width - r, -abs(vx[i]) * e
    if x[i] + r < -EXIT_MARGIN * world.width or x[i] - r > (1 + EXIT_MARGIN) * world.width:
        present[i] = False


def _collide(i: int, j: int, balls, x, y, vx, vy, radius, inv_mass, released) -> None:
    dx, dy = x[j] - x[i], y[j] - y[i]
    reach = radius[i] + radius[j]
    dist2 = dx * dx + dy * dy
    if dist2 >= reach * reach or dist2 == 0.0:
        return
    wi = inv_mass[i] if released[i] else 0.0
    wj = inv_mass[j] if released[j] else 0.0
    if wi + wj == 0.0:
        return
    dist = math.sqrt(dist2)
    nx, ny = dx / dist, dy / dist
    push = (reach - dist) / (wi + wj)
    x[i], y[i] = x[i] - push * wi * nx, y[i] - push * wi * ny
    x[j], y[j] = x[j] + push * wj * nx, y[j] + push * wj * ny
    approach = (vx[j] - vx[i]) * nx + (vy[j] - vy[i]) * ny
    if approach < 0:
        e = min(balls[i].restitution, balls[j].restitution)
        impulse = -(1 + e) * approach / (wi + wj)
        vx[i], vy[i] = vx[i] - impulse * wi * nx, vy[i] - impulse * wi * ny
        vx[j], vy[j] = vx[j] + impulse * wj * nx, vy[j] + impulse * wj * ny
