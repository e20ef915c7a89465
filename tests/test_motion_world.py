"""The motion world (one large ball gliding left, right, up or down) and its judge without a model."""

from pathlib import Path

import numpy as np
import pytest

from data_pipelines.labelled_source import read_manifest
from vgpt_jax.demo import motion_judge, physics_scenes, synthetic_physics
from vgpt_jax.demo.physics_render import draw_balls
from vgpt_jax.demo.physics_sim import simulate, step_index

MOTIONS = ("move-left", "move-right", "move-up", "move-down")


def square_video(step: tuple[int, int], frames: int = 8, size: int = 40, side: int = 6) -> np.ndarray:
    """(frames, size, size, 3) uint8: a white square on black, its top-left corner at (17, 17)
    moved by ``step`` = (columns, rows) pixels a frame."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        col, row = 17 + t * step[0], 17 + t * step[1]
        video[t, row : row + side, col : col + side] = 255
    return video


@pytest.mark.parametrize(
    ("step", "verdict"),
    [((2, 0), "move-right"), ((-2, 0), "move-left"), ((0, -1), "move-up"), ((0, 2), "move-down")],
)
def test_a_moving_square_is_judged_its_direction(step, verdict):
    assert physics_scenes.CLASS_WORLDS["motion"] == MOTIONS
    assert motion_judge.judge_direction(square_video(step)) == MOTIONS.index(verdict)


def test_velocity_of_a_square_moving_two_pixels_a_frame():
    # between t and t+1 the square leaves columns 17+2t, 18+2t and covers 23+2t, 24+2t (rows
    # 17-22): with pixel centres at +0.5, the change's centroid is column 21 + 2t, row 20; its
    # mass is those 2 strips of 2x6 pixels in 3 channels, each changed by 255
    centroids, mass = motion_judge.change_centroids(square_video((2, 0)))
    t = np.arange(7)
    np.testing.assert_allclose(centroids, np.stack([21 + 2 * t, np.full(7, 20.0)], -1))
    np.testing.assert_allclose(mass, np.full(7, 2 * 2 * 6 * 3 * 255.0))
    np.testing.assert_allclose(motion_judge.velocity(square_video((2, 0))), [2.0, 0.0], atol=1e-12)


def test_a_still_video_is_no_class_and_flicker_does_not_turn_the_verdict():
    assert motion_judge.judge_direction(square_video((0, 0))) == motion_judge.STILL
    rng = np.random.default_rng(0)
    video = square_video((0, 2)).astype(np.int16) + rng.integers(0, 20, (8, 40, 40, 3))
    assert motion_judge.judge_direction(np.clip(video, 0, 255).astype(np.uint8)) == MOTIONS.index("move-down")


def ball_track(scene: physics_scenes.Scene, view: str, size: int, seconds: float) -> np.ndarray:
    """(frames, 2) the rendered ball's coverage-weighted centroid (column, row) in float64 pixels,
    at 8 fps: the ball drawn in white on black, so a pixel's value is its coverage."""
    (ball,) = scene.balls
    camera = physics_scenes.camera(scene, view, size, size)
    trajectory = simulate(scene.world, list(scene.balls), seconds)
    rows, cols = np.indices((size, size)) + 0.5
    track = []
    for k in range(round(seconds * 8)):
        s = step_index(k / 8)
        image = draw_balls(np.zeros((size, size, 3), np.float32), camera, trajectory.position[s],
                           np.array([ball.radius]), trajectory.angle[s], np.ones((1, 3)),
                           trajectory.present[s])[..., 0].astype(np.float64)  # fmt: skip
        track.append([(image * cols).sum() / image.sum(), (image * rows).sum() / image.sum()])
    return np.asarray(track)


@pytest.mark.parametrize("kind", MOTIONS)
def test_the_rendered_ball_moves_its_class_direction_in_every_view(kind):
    direction = np.asarray(physics_scenes.MOTIONS[kind], np.float64)
    for seed in range(5):
        scene = physics_scenes.sample_scene(np.random.default_rng(seed), kind=kind)
        (ball,) = scene.balls
        # a fifth to a quarter of the centre view's 64 px height
        assert 64 / 5 <= ball.radius * 64 / physics_scenes.ROOM_WIDTH <= 64 / 4 + 1
        for view in physics_scenes.VIEWS:
            track = ball_track(scene, view, 64, 4.0)
            moved = track[-1] - track[0]
            # along the class's direction by more than the ball's radius, barely across it
            assert moved @ direction > 12 and abs(moved @ direction[::-1]) < 1, (seed, view, moved)
            # every step goes the same way: no bounce off the floor or a wall
            assert np.all(np.diff(track, axis=0) @ direction > 0)
            # the centroid of what is visible stays in the frame
            assert np.all((track > 0) & (track < 64))


def test_motion_videos_are_labelled_by_direction_and_judged_right(tmp_path):
    root = Path(synthetic_physics.write_training_set(str(tmp_path), 8, 32, 32, 3, 8, 4.0, kinds=MOTIONS))
    listing = read_manifest(str(root / synthetic_physics.LABELS_FILE))
    for video in listing.videos:  # the name ends with the kind the scene was drawn with
        assert video.video_id.removesuffix(".mp4").endswith("-" + MOTIONS[video.label])
    verdicts, labels = motion_judge.judge_manifest(root / synthetic_physics.LABELS_FILE, range(0, 32, 2))
    np.testing.assert_array_equal(verdicts, labels)


def test_the_ball_is_brighter_than_its_dimmed_room():
    # rooms are drawn up to value 0.85 (wall top) and dimmed to 0.45 of it (< 0.39); balls have
    # value >= 0.85, so the ball stands out by brightness whatever the two hues
    for seed in range(20):
        kind = MOTIONS[seed % 4]
        scene = physics_scenes.sample_scene(np.random.default_rng(seed), kind=kind)
        room = scene.background
        brightest_room = max(max(room.wall_top), max(room.wall_bottom), max(room.floor))
        assert brightest_room < 0.39 and max(scene.balls[0].color) >= 0.85
