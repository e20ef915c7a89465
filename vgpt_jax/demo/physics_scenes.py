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

A second labelled world, :data:`MOTIONS`, is for class conditions at small sizes: one large, bright
ball (a fifth to a quarter of the frame high, any hue) glides without gravity to the left, right,
up or down over random dimmed rooms from a random start, so its class is a motion that fills the
frame (the kinds' few small balls change little of a 64 px video). :data:`CLASS_WORLDS` names both.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools

import numpy as np

from vgpt_jax.demo.physics_render import WALL_PATTERNS, Background, Camera
from vgpt_jax.demo.physics_sim import Ball, World

KINDS = ("ball-drop", "ball-throw", "ball-roll", "balls-collide")
# image directions (columns right, rows down) of the motion world's classes
MOTIONS = {"move-left": (-1, 0), "move-right": (1, 0), "move-up": (0, -1), "move-down": (0, 1)}
CLASS_WORLDS = {"kinds": KINDS, "motion": tuple(MOTIONS)}
VIEWS = ("perspective-left", "perspective-center", "perspective-right")
ROOM_WIDTH = 3.0  # metres seen by the centre view
# metres: at the demo's 64 px (21 px a metre) a ball is 11-19 px wide, wider than the 8 px that
# one latent cell of an 8x-downsampling tokenizer covers, so a model can move it between cells
BALL_RADIUS = (0.25, 0.45)
# metres, of the motion world: 13-15 px of the centre view's 64 (a fifth to a quarter of the height)
MOTION_RADIUS = (0.6, 0.7)
# m/s: 1.4-1.8 m (30-38 px at 64 px) over the probe world's 4 s videos, more than the ball's diameter,
# 2-2.4 px between the frames a class run learns (2 apart): a 4-frame clip shows the ball move a
# latent cell
MOTION_SPEED = (0.35, 0.45)
# seconds: the ball passes its mid-point, near the middle of every view, half-way through 4 s
MOTION_MIDPOINT = 2.0
# the motion world's rooms at this fraction of their brightness: its bright balls (value 0.85-1)
# then differ from the room by brightness whatever their hue, so that where the ball is (the class)
# explains far more of the pixels than one random colour on another does
MOTION_ROOM_DIMMING = 0.45
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


def _dimmed(background: Background, factor: float) -> Background:
    """``background`` with its wall and floor colours at ``factor`` of their brightness."""
    colours = ("wall_top", "wall_bottom", "floor")
    return dataclasses.replace(
        background, **{name: tuple(factor * c for c in getattr(background, name)) for name in colours}
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
    world = _world(rng, kind)
    specs = _KIND_BALLS[kind](rng, room_height)
    colors = _ball_colors(rng, len(specs))
    balls = tuple(
        Ball(x, y, vx, vy, r, float(rng.uniform(0.55, 0.9)), t, color)
        for (x, y, vx, vy, r, t), color in zip(specs, colors, strict=True)
    )
    background = _background(rng, room_height)
    if kind in MOTIONS:
        background = _dimmed(background, MOTION_ROOM_DIMMING)
    return Scene(kind, world, balls, background, room_height)


def _world(rng: np.random.Generator, kind: str) -> World:
    """The room's walls and floor; a motion has neither gravity nor walls, so that its ball keeps
    its direction (the draws are made either way: a kind's scenes stay those of its seed)."""
    left_wall, right_wall = bool(rng.random() < 0.6), bool(rng.random() < 0.6)
    rolling_resistance = float(rng.uniform(0.02, 0.12))
    if kind in MOTIONS:
        return World(ROOM_WIDTH, left_wall=False, right_wall=False, gravity=0.0)
    return World(ROOM_WIDTH, left_wall, right_wall, rolling_resistance)


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


def _move(rng, room_height, direction):
    """One large ball gliding from t = 0 in image ``direction`` (MOTIONS), at its mid-point at
    :data:`MOTION_MIDPOINT` near the middle of every view (x 1-2 m, y above the floor by more than
    the way down), so that it stays mostly in view (a fast rise ends with the ball's top out)."""
    r = float(rng.uniform(*MOTION_RADIUS))
    speed = float(rng.uniform(*MOTION_SPEED))
    dx, dy = direction[0], -direction[1]  # image rows grow downwards, world y upwards
    half_way = speed * MOTION_MIDPOINT
    if dy:  # the lowest point (mid-height less half the way) clears the floor
        x_mid, y_mid = float(rng.uniform(1.0, 2.0)), r + 0.05 + half_way + float(rng.uniform(0.0, 0.1))
    else:
        x_mid, y_mid = ROOM_WIDTH / 2 + float(rng.uniform(-0.2, 0.2)), r + 0.05 + float(rng.uniform(0.0, 0.6))
    return [(x_mid - dx * half_way, y_mid - dy * half_way, dx * speed, dy * speed, r, 0.0)]


_KIND_BALLS = {"ball-drop": _drop, "ball-throw": _throw, "ball-roll": _roll, "balls-collide": _collide}
_KIND_BALLS.update({kind: functools.partial(_move, direction=d) for kind, d in MOTIONS.items()})


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
        **{kind: f"glides {kind.removeprefix('move-')}" for kind in MOTIONS},
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
