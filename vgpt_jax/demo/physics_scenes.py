"""Seeded scenes for the synthetic physics world: balls, room, backgrounds, cameras, takes, text.

A scene is drawn from a ``np.random.Generator`` only, so a seed fixes it. Four kinds cover the
events Physics-IQ's solid-mechanics scenarios probe:

* ``ball-drop``: balls held in the air are released one after another;
* ``ball-throw``: balls are thrown in from a side;
* ``ball-roll``: balls roll along the floor into resting ones (and out through open sides);
* ``balls-collide``: two balls are thrown at each other.

Every release falls in a benchmark video's 3 s conditioning part, the last one in its final second
(a collision's launch in 1.5–2.8 s), so the 5 s testing part continues motion the conditioning part
shows: when a held ball lets go is random, so a release after the switch frame is an event no video
model could foresee, and scoring it would only reward predicting stillness. The
second take of a scenario re-runs it with small changes (positions by ~1 cm, launch speeds by ~3 %,
release times by ~40 ms, restitution by ~0.015), the way a re-recorded real take differs.
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

from vgpt_jax.demo.physics_render import WALL_PATTERNS, Background, Camera
from vgpt_jax.demo.physics_sim import Ball, World

KINDS = ("ball-drop", "ball-throw", "ball-roll", "balls-collide")
VIEWS = ("perspective-left", "perspective-center", "perspective-right")
ROOM_WIDTH = 3.0  # metres seen by the centre view
# metres: at the demo's 64 px (21 px a metre) a ball is 11-19 px wide, wider than the 8 px that
# one latent cell of an 8x-downsampling tokenizer covers, so a model can move it between cells
BALL_RADIUS = (0.25, 0.45)
FLOOR_FRACTION = 0.15  # of the image height, below the floor line in the centre view
# Per view: horizontal shift of the camera (fraction of the room width) and zoom.
VIEW_OFFSETS = {
    "perspective-left": (-0.12, 1.12),
    "perspective-center": (0.0, 1.0),
    "perspective-right": (0.12, 1.12),
}
COLOR_NAMES = ((0, "red"), (30, "orange"), (55, "yellow"), (120, "green"), (185, "cyan"), (220, "blue"),
               (275, "purple"), (320, "pink"), (360, "red"))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Scene:
    kind: str
    world: World
    balls: tuple[Ball, ...]
    background: Background
    room_height: float  # metres above the floor seen by the centre view


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def color_name(rgb: tuple[float, float, float]) -> str:
    hue = colorsys.rgb_to_hsv(*rgb)[0] * 360
    return min(COLOR_NAMES, key=lambda c: abs(c[0] - hue))[1]


def _background(rng: np.random.Generator, room_height: float) -> Background:
    hue = rng.random()
    value = rng.uniform(0.3, 0.7)
    sat = rng.uniform(0.1, 0.45)
    pattern = WALL_PATTERNS[rng.integers(len(WALL_PATTERNS))]
    blobs = tuple(
        (rng.uniform(-1, ROOM_WIDTH + 1), rng.uniform(0.5, room_height), rng.uniform(0.3, 1.0))
        for _ in range(3)
    )
    return Background(
        wall_top=_hsv(hue, sat, min(value + 0.15, 1)),
        wall_bottom=_hsv(hue, sat, value),
        floor=_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.5)),
        pattern=pattern,
        period=float(rng.uniform(0.25, 0.8)),
        strength=float(rng.uniform(0.08, 0.25)),
        blobs=blobs if pattern == "blobs" else (),
        room_height=room_height,
    )


def _ball_colors(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    """Saturated, bright colours with hues at least 1/(2n) of the circle apart."""
    start = rng.random()
    return [
        _hsv(start + k / n + rng.uniform(0, 0.5 / n), rng.uniform(0.65, 0.95), rng.uniform(0.85, 1.0))
        for k in range(n)
    ]


def sample_scene(rng: np.random.Generator, aspect: float = 1.0, kind: str | None = None) -> Scene:
    """A random scene; ``aspect`` = image width / height of the videos it will be rendered at."""
    kind = kind or KINDS[rng.integers(len(KINDS))]
    room_height = ROOM_WIDTH / aspect * (1 - FLOOR_FRACTION)
    world = World(
        width=ROOM_WIDTH,
        left_wall=bool(rng.random() < 0.6),
        right_wall=bool(rng.random() < 0.6),
        rolling_resistance=float(rng.uniform(0.02, 0.12)),
    )
    specs = _KIND_BALLS[kind](rng, room_height)
    colors = _ball_colors(rng, len(specs))
    balls = tuple(
        Ball(x, y, vx, vy, r, float(rng.uniform(0.55, 0.9)), t, color)
        for (x, y, vx, vy, r, t), color in zip(specs, colors, strict=True)
    )
    return Scene(kind, world, balls, _background(rng, room_height), room_height)


def _radius(rng: np.random.Generator) -> float:
    return float(rng.uniform(*BALL_RADIUS))


def _release_times(rng: np.random.Generator, n: int) -> list[float]:
    """n release times in the conditioning part (0.2-2 s), the last of them in 2-2.9 s."""
    return [float(rng.uniform(0.2, 2.0)) for _ in range(n - 1)] + [float(rng.uniform(2.0, 2.9))]


def _drop(rng, room_height):
    n = int(rng.integers(2, 4))
    xs = np.sort(rng.uniform(0.4, ROOM_WIDTH - 0.4, n))
    return [
        (
            float(x),
            float(rng.uniform(0.55, 0.9) * room_height),
            float(rng.normal(0, 0.5)),
            0.0,
            _radius(rng),
            t,
        )
        for x, t in zip(xs, rng.permutation(_release_times(rng, n)), strict=True)
    ]


def _throw(rng, room_height):
    specs = []
    for t in _release_times(rng, 2):
        side = rng.choice([-1.0, 1.0])
        r = _radius(rng)
        x = ROOM_WIDTH / 2 - side * (ROOM_WIDTH / 2 - r - 0.05)
        specs.append((x, float(rng.uniform(0.2, 0.6) * room_height), side * float(rng.uniform(1.5, 4)),
                      float(rng.uniform(0, 4)), r, t))  # fmt: skip
    return specs


def _roll(rng, room_height):
    specs = []
    for _ in range(int(rng.integers(1, 3))):  # resting targets
        r = _radius(rng)
        specs.append((float(rng.uniform(1.0, ROOM_WIDTH - 1.0)), r, 0.0, 0.0, r, 0.0))
    side = rng.choice([-1.0, 1.0])
    r = _radius(rng)
    x = ROOM_WIDTH / 2 - side * (ROOM_WIDTH / 2 - r - 0.05)
    specs.append((x, r, side * float(rng.uniform(1.0, 3.0)), 0.0, r, _release_times(rng, 1)[0]))
    return _separate(specs)


def _collide(rng, room_height):
    t = float(rng.uniform(1.5, 2.8))
    specs = []
    for side in (-1.0, 1.0):
        r = _radius(rng)
        x = ROOM_WIDTH / 2 - side * (ROOM_WIDTH / 2 - r - 0.05)
        specs.append((x, float(rng.uniform(0.2, 0.5) * room_height), side * float(rng.uniform(2, 4)),
                      float(rng.uniform(1, 4)), r, t))  # fmt: skip
    return specs


def _separate(specs):
    """Moves floor balls apart along x so that none starts overlapping another."""
    specs = sorted(specs, key=lambda s: s[0])
    for k in range(1, len(specs)):
        prev, cur = specs[k - 1], specs[k]
        gap = prev[0] + prev[4] + cur[4] + 0.02
        if cur[0] < gap:
            specs[k] = (gap, *cur[1:])
    return specs


_KIND_BALLS = {"ball-drop": _drop, "ball-throw": _throw, "ball-roll": _roll, "balls-collide": _collide}


def second_take(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same set-up recorded again: every ball's start, launch and timing changed slightly."""
    balls = tuple(
        dataclasses.replace(
            b,
            x=b.x + float(rng.normal(0, 0.01)),
            y=max(b.y + float(rng.normal(0, 0.01)), b.radius),
            vx=b.vx * (1 + float(rng.normal(0, 0.03))),
            vy=b.vy * (1 + float(rng.normal(0, 0.03))),
            release_time=max(b.release_time + float(rng.normal(0, 0.04)), 0.0),
            restitution=float(np.clip(b.restitution + rng.normal(0, 0.015), 0.3, 0.95)),
        )
        for b in scene.balls
    )
    return dataclasses.replace(scene, balls=balls)


def camera(scene: Scene, view: str, height: int, width: int) -> Camera:
    """The static camera of ``view``: the centre view sees the room width and the floor band."""
    shift, zoom = VIEW_OFFSETS[view]
    scale = width / ROOM_WIDTH * zoom
    centre_y = height / 2 / (width / ROOM_WIDTH) - FLOOR_FRACTION * height / (width / ROOM_WIDTH)
    return Camera(ROOM_WIDTH / 2 + shift * ROOM_WIDTH, centre_y, scale, height, width)


def _action(scene: Scene, ball: Ball) -> str:
    if ball.vx == 0 and ball.vy == 0 and ball.y <= ball.radius:
        return "rests on the floor"
    return {
        "ball-drop": "is held in the air and then released",
        "ball-throw": "is thrown in from the side",
        "ball-roll": "rolls in along the floor",
        "balls-collide": "is thrown towards the other ball",
    }[scene.kind]


def describe(scene: Scene) -> str:
    """One-paragraph text of the set-up, in the benchmark's style."""
    sides = {
        (True, True): "walls on both sides",
        (False, False): "open on both sides",
        (True, False): "a wall on the left and open on the right",
        (False, True): "open on the left and a wall on the right",
    }[(scene.world.left_wall, scene.world.right_wall)]
    text = [f"A room with a {scene.background.pattern} wall and a floor, {sides}."]
    text += [f"A {color_name(b.color)} ball {_action(scene, b)}." for b in scene.balls]
    return " ".join(text) + " Static shot with no camera movement."
