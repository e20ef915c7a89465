"""Anti-aliased rendering of the ball world through a static camera, in NumPy.

A :class:`Camera` maps world metres to pixels (uniform scale, y up -> rows down). The background
is a function of world coordinates (wall gradient and pattern above the floor, floor below), so
the three views of one scene show the same room from shifted, zoomed viewpoints; it is computed
once per view. Balls are shaded discs whose edge coverage is ``clip(r - d + 0.5, 0, 1)`` (d =
distance from the pixel centre), with a darker spot that turns with the ball so rolling is visible.
"""

from __future__ import annotations

import dataclasses

import numpy as np

WALL_PATTERNS = ("plain", "stripes", "tiles", "blobs")


@dataclasses.dataclass(frozen=True)
class Camera:
    """The world point at the image centre (metres), and pixels per metre."""

    centre_x: float
    centre_y: float
    scale: float
    height: int
    width: int

    def to_pixels(self, x, y):
        """World (x, y) -> (column, row) as floats; pixel centres are at integer + 0.5."""
        return (x - self.centre_x) * self.scale + self.width / 2, (
            self.centre_y - y
        ) * self.scale + self.height / 2

    def pixel_world_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) of every pixel centre: two (H, W) arrays."""
        cols = (np.arange(self.width) + 0.5 - self.width / 2) / self.scale + self.centre_x
        rows = self.centre_y - (np.arange(self.height) + 0.5 - self.height / 2) / self.scale
        return np.meshgrid(cols, rows)


@dataclasses.dataclass(frozen=True)
class Background:
    wall_top: tuple[float, float, float]  # RGB in [0, 1]
    wall_bottom: tuple[float, float, float]
    floor: tuple[float, float, float]
    pattern: str = "plain"
    period: float = 0.5  # metres, stripes and tiles
    strength: float = 0.1  # pattern contrast
    blobs: tuple[tuple[float, float, float], ...] = ()  # (x, y, radius) in metres
    room_height: float = 4.0  # the wall gradient spans floor .. room_height


def render_background(background: Background, camera: Camera) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1]."""
    x, y = camera.pixel_world_coords()
    mix = np.clip(y / background.room_height, 0, 1)[..., None]
    wall = (1 - mix) * np.asarray(background.wall_bottom) + mix * np.asarray(background.wall_top)
    if background.pattern == "stripes":
        wall = wall * (1 + background.strength * np.sign(np.sin(np.pi * x / background.period)))[..., None]
    elif background.pattern == "tiles":
        checker = (np.floor(x / background.period) + np.floor(y / background.period)) % 2
        wall = wall * (1 + background.strength * (2 * checker - 1))[..., None]
    elif background.pattern == "blobs":
        glow = sum(
            np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * br * br)) for bx, by, br in background.blobs
        )
        wall = wall * (1 + background.strength * np.asarray(glow))[..., None]
    floor = (
        np.asarray(background.floor) * (1 - 0.25 * np.clip(-y / 1.0, 0, 1))[..., None]
    )  # darker near camera
    image = np.where((y < 0)[..., None], floor, wall)
    return np.clip(image, 0, 1).astype(np.float32)


def draw_balls(
    background: np.ndarray,
    camera: Camera,
    centres: np.ndarray,
    radii: np.ndarray,
    angles: np.ndarray,
    colors: np.ndarray,
    present: np.ndarray,
) -> np.ndarray:
    """One frame: ``background`` (H, W, 3) float with n balls drawn -> (H, W, 3) uint8.

    ``centres`` (n, 2) m, ``radii`` (n,) m, ``angles`` (n,) rad, ``colors`` (n, 3) in [0, 1],
    ``present`` (n,) bool. Balls are drawn in order, later ones on top.
    """
    image = background.copy()
    height, width = image.shape[:2]
    cols, rows = camera.to_pixels(centres[:, 0], centres[:, 1])
    for i in np.flatnonzero(present):
        r = radii[i] * camera.scale
        c0, c1 = max(int(cols[i] - r - 1), 0), min(int(cols[i] + r + 2), width)
        r0, r1 = max(int(rows[i] - r - 1), 0), min(int(rows[i] + r + 2), height)
        if c0 >= c1 or r0 >= r1:
            continue  # outside this view
        dx = np.arange(c0, c1) + 0.5 - cols[i]
        dy = (np.arange(r0, r1) + 0.5 - rows[i])[:, None]
        dist = np.sqrt(dx * dx + dy * dy)
        coverage = np.clip(r - dist + 0.5, 0, 1)[..., None]
        shade = 1 - 0.3 * np.clip(dist / r, 0, 1) ** 2  # a lit sphere: darker towards the rim
        color = colors[i] * shade[..., None]
        # The spot sits half a radius from the centre; screen rows grow downwards, hence -sin.
        sx, sy = 0.5 * r * np.cos(angles[i]), -0.5 * r * np.sin(angles[i])
        spot = np.clip(0.3 * r - np.sqrt((dx - sx) ** 2 + (dy - sy) ** 2) + 0.5, 0, 1)[..., None]
        color = color * (1 - 0.55 * spot)
        patch = image[r0:r1, c0:c1]
        image[r0:r1, c0:c1] = patch * (1 - coverage) + color * coverage
    return np.round(image * 255).astype(np.uint8)
