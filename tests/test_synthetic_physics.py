"""The synthetic physics world: hand-computed mechanics, rendering, determinism, Physics-IQ layout."""

import csv
import dataclasses
import math
import os
import pathlib

import numpy as np
import pytest

from data_pipelines import video_io
from data_pipelines.array_record_source import ClipRecordSource
from vgpt_jax.demo import physics_scenes, synthetic_physics
from vgpt_jax.demo.physics_render import Background, Camera, draw_balls, render_background
from vgpt_jax.demo.physics_sim import GRAVITY, PHYSICS_HZ, Ball, World, simulate, step_index

G = GRAVITY


def run(balls, seconds, **world):
    return simulate(World(**{"width": 10.0, **world}), balls, seconds)


def test_free_fall():
    traj = run([Ball(x=5, y=3, vx=0, vy=0, radius=0.2, restitution=0.8)], 0.5)
    # y0 - g t^2 / 2, within the O(dt) error of the integrator
    assert traj.position[step_index(0.5), 0, 1] == pytest.approx(3 - G * 0.25 / 2, abs=0.01)
    assert traj.position.shape == (PHYSICS_HZ // 2 + 1, 1, 2)


def test_bounce_reaches_restitution_squared_height():
    h, r, e = 2.0, 0.2, 0.8
    traj = run([Ball(x=5, y=r + h, vx=0, vy=0, radius=r, restitution=e)], 2.0)
    first_impact = math.sqrt(2 * h / G)
    after = traj.position[step_index(first_impact + 0.1) :, 0, 1]
    assert after.max() - r == pytest.approx(e * e * h, rel=0.03)
    assert traj.position[:, 0, 1].min() >= r


def test_wall_reflects_with_restitution():
    traj = run([Ball(x=1, y=1, vx=2, vy=0, radius=0.2, restitution=0.5)], 2.0, width=3.0, gravity=0.0)
    # reaches x = 3 - 0.2 after 0.9 s, comes back at 1 m/s
    assert traj.position[step_index(2.0), 0, 0] == pytest.approx(2.8 - 1.0 * 1.1, abs=0.02)


def test_equal_balls_exchange_velocity():
    a = Ball(x=1, y=1, vx=1, vy=0, radius=0.2, restitution=1.0)
    b = Ball(x=2, y=1, vx=0, vy=0, radius=0.2, restitution=1.0)
    traj = run([a, b], 2.0, gravity=0.0)
    # contact when the centres are 0.4 apart: after 0.6 s; then a stops and b moves at 1 m/s
    x = traj.position[step_index(2.0), :, 0]
    assert x[0] == pytest.approx(1.6, abs=0.02) and x[1] == pytest.approx(3.4, abs=0.02)


def test_unequal_balls_elastic_impact():
    small = Ball(x=1, y=1, vx=1, vy=0, radius=0.2, restitution=1.0)  # mass ~ r^2: 1 : 4
    big = Ball(x=2, y=1, vx=0, vy=0, radius=0.4, restitution=1.0)
    traj = run([small, big], 2.0, gravity=0.0)
    x = traj.position[:, :, 0]
    t0, t1 = step_index(1.5), step_index(2.0)
    velocity = (x[t1] - x[t0]) / 0.5
    # (m1 - m2) / (m1 + m2) = -0.6 and 2 m1 / (m1 + m2) = 0.4 times the incoming speed
    np.testing.assert_allclose(velocity, [-0.6, 0.4], atol=0.01)


def test_rolling_slows_down_and_turns_the_ball():
    r, v, c = 0.25, 2.0, 0.1
    traj = run([Ball(x=0.5, y=r, vx=v, vy=0, radius=r, restitution=0.5)], 3.0, rolling_resistance=c)
    distance = v * v / (2 * c * G)  # constant deceleration c * g
    assert traj.position[-1, 0, 0] - 0.5 == pytest.approx(distance, rel=0.01)
    assert traj.position[-1, 0, 1] == pytest.approx(r)
    assert traj.angle[-1, 0] == pytest.approx(-distance / r, rel=0.01)  # rolls without slipping, clockwise


def test_ball_leaves_through_an_open_side():
    traj = run(
        [Ball(x=2.5, y=0.2, vx=3, vy=0, radius=0.2, restitution=0.5)],
        3.0,
        width=3.0,
        right_wall=False,
        rolling_resistance=0.0,
    )
    assert traj.present[0, 0] and not traj.present[-1, 0]
    walled = run([Ball(x=2.5, y=0.2, vx=3, vy=0, radius=0.2, restitution=0.5)], 3.0, width=3.0)
    assert walled.present[-1, 0] and walled.position[:, 0, 0].max() <= 3.0 - 0.2 + 1e-9


def test_held_ball_waits_for_its_release():
    traj = run([Ball(x=5, y=2, vx=1, vy=0, radius=0.2, restitution=0.5, release_time=1.0)], 1.5)
    held = traj.position[: step_index(1.0) + 1, 0]
    assert np.all(held == [5, 2])
    assert traj.position[-1, 0, 0] == pytest.approx(5.5, abs=0.01)


def test_anti_aliased_disc_covers_pi_r_squared():
    camera = Camera(centre_x=0, centre_y=0, scale=10, height=40, width=40)
    kwargs = dict(
        centres=np.array([[0.13, -0.07]]),
        radii=np.array([0.63]),
        angles=np.array([0.0]),
        colors=np.array([[0.9, 0.3, 0.1]]),
        present=np.array([True]),
    )
    on_black = draw_balls(np.zeros((40, 40, 3), np.float32), camera, **kwargs).astype(float) / 255
    on_white = draw_balls(np.ones((40, 40, 3), np.float32), camera, **kwargs).astype(float) / 255
    alpha = 1 - (on_white - on_black)  # pixel = (1 - a) * background + a * colour
    assert alpha[..., 0].sum() == pytest.approx(math.pi * 6.3**2, rel=0.01)
    edge = alpha[..., 0][(alpha[..., 0] > 0.05) & (alpha[..., 0] < 0.95)]
    assert edge.size > 20  # soft edge pixels: anti-aliased


def test_scenes_are_deterministic_per_seed_and_takes_differ_slightly():
    one = physics_scenes.sample_scene(np.random.default_rng(7))
    assert one == physics_scenes.sample_scene(np.random.default_rng(7))
    assert one != physics_scenes.sample_scene(np.random.default_rng(8))
    a, b = synthetic_physics.benchmark_takes(0, 3, 32, 32)
    assert a == synthetic_physics.benchmark_takes(0, 3, 32, 32)[0]
    for first, second in zip(a.balls, b.balls, strict=True):
        assert (
            abs(first.x - second.x)
            + abs(first.vx - second.vx)
            + abs(first.release_time - second.release_time)
            > 0
        )
        assert abs(first.x - second.x) < 0.05 and abs(first.release_time - second.release_time) < 0.2
        assert first.radius == second.radius and first.color == second.color
    assert dataclasses.replace(b, balls=a.balls) == a  # room, walls and background are the same
    traj_a = simulate(a.world, list(a.balls), 8.0)
    np.testing.assert_array_equal(traj_a.position, simulate(a.world, list(a.balls), 8.0).position)
    assert not np.array_equal(traj_a.position, simulate(b.world, list(b.balls), 8.0).position)


@pytest.mark.parametrize("kind", physics_scenes.KINDS)
def test_every_release_is_in_the_conditioning_part_the_last_in_its_final_seconds(kind):
    """What the testing part shows must follow from the conditioning part: a held ball's release
    time cannot be foreseen, so none falls after the switch frame (t = 3 s)."""
    switch = synthetic_physics.CONDITIONING_SECONDS
    for seed in range(50):
        scene = physics_scenes.sample_scene(np.random.default_rng(seed), kind=kind)
        released = [b.release_time for b in scene.balls if b.release_time > 0]
        assert released and max(released) < switch - 0.05
        assert max(released) >= 1.5, "motion must still be under way at the switch frame"


def test_views_share_the_room_background():
    scene = physics_scenes.sample_scene(np.random.default_rng(1))
    images = [
        render_background(scene.background, physics_scenes.camera(scene, v, 32, 48))
        for v in physics_scenes.VIEWS
    ]
    assert all(img.shape == (32, 48, 3) for img in images)
    assert not np.array_equal(images[0], images[2])
    plain = Background((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    floor_row = render_background(plain, physics_scenes.camera(scene, "perspective-center", 100, 100))[
        :, 50, 0
    ]
    # the centre view puts the floor line 15 % above the bottom
    assert np.argmax(floor_row < 0.4) == 85


# ---------------------------------------------------------------------------------------------
# The written dataset (PHYSICS_IQ_SPEC §1-2)

M, SIZE = 2, 32
VIEWS = ("perspective-left", "perspective-center", "perspective-right")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    synthetic_physics.main(
        ["--out", out, "--num-train", "2", "--num-scenarios", str(M), "--size", str(SIZE), "--workers", "1"]
    )
    return out


def expected_layout():
    """File names from the benchmark's naming rules, independently of the generator."""
    scenarios = [f"synthetic-ball-drop-{1:04d}", f"synthetic-ball-throw-{2:04d}"]  # kinds cycle in order
    split, switch, rows = set(), set(), []
    for take in (1, 2):
        for s, scen in enumerate(scenarios):
            for v, view in enumerate(VIEWS):
                vid = f"{3 * s + v + 1 + (take - 1) * 3 * M:04d}"
                rows.append((f"{vid}_{view}_take-{take}_{scen}.mp4", f"{vid}_{view}_{scen}.mp4"))
                for fps in (8, 16, 24, 30):
                    for part in ("testing", "conditioning"):
                        name = f"{vid}_{part}-videos_{fps}FPS_{view}_take-{take}_{scen}.mp4"
                        split.add(os.path.join("split-videos", part, f"{fps}FPS", name))
                if take == 1:
                    switch.add(f"{vid}_switch-frames_anyFPS_{view}_{scen}.jpg")
    return split, switch, rows


def test_benchmark_files_are_exactly_the_physics_iq_layout(written):
    root = os.path.join(written, "physics-IQ-benchmark")
    split, switch, _ = expected_layout()
    found = {
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(os.path.join(root, "split-videos"))
        for f in files
    }
    assert found == split
    assert set(os.listdir(os.path.join(root, "switch-frames"))) == switch
    assert sorted(os.listdir(root)) == ["descriptions", "split-videos", "switch-frames"]


def test_frame_counts_and_durations(written):
    root = os.path.join(written, "physics-IQ-benchmark", "split-videos")
    for part, seconds in (("conditioning", 3), ("testing", 5)):
        for fps in (8, 16, 24, 30):
            folder = os.path.join(root, part, f"{fps}FPS")
            for name in os.listdir(folder):
                info = video_io.probe(os.path.join(folder, name))
                assert (info.num_frames, info.fps, info.width, info.height) == (
                    seconds * fps,
                    fps,
                    SIZE,
                    SIZE,
                )
    import av

    with av.open(
        os.path.join(root, "testing", "8FPS", sorted(os.listdir(os.path.join(root, "testing", "8FPS")))[0])
    ) as c:
        assert c.duration / av.time_base == pytest.approx(5.0, abs=1e-3)


def test_fps_variants_show_the_same_motion(written):
    root = os.path.join(written, "physics-IQ-benchmark", "split-videos", "testing")
    name = "0001_testing-videos_{f}FPS_perspective-left_take-1_synthetic-ball-drop-0001.mp4"
    at8 = video_io.read_frames(os.path.join(root, "8FPS", name.format(f=8)), list(range(40)))
    at24 = video_io.read_frames(os.path.join(root, "24FPS", name.format(f=24)), list(range(0, 120, 3)))
    assert np.abs(at8.astype(int) - at24.astype(int)).mean() < 4  # same instants, codec noise only
    assert np.abs(np.diff(at8.astype(int), axis=0)).mean() > 0.05  # and the video is not still


def test_takes_differ_slightly(written):
    root = os.path.join(written, "physics-IQ-benchmark", "split-videos", "testing", "30FPS")
    names = sorted(os.listdir(root))
    take1 = video_io.read_frames(os.path.join(root, names[0]), list(range(150)))  # ID 0001
    take2 = video_io.read_frames(os.path.join(root, names[6]), list(range(150)))  # ID 0007 = 0001 + 3M
    assert names[6].startswith("0007_") and names[6].split("_")[3:] == [
        "perspective-left",
        "take-2",
        names[0].split("_")[-1],
    ]
    diff = np.abs(take1.astype(int) - take2.astype(int))
    assert diff.max() > 40  # the balls are somewhere else at some point
    assert np.median(diff) <= 4  # but most of the picture (the room) is the same, up to codec noise


def test_switch_frame_is_the_first_testing_frame(written):
    from PIL import Image

    root = os.path.join(written, "physics-IQ-benchmark")
    jpg = np.asarray(
        Image.open(
            os.path.join(root, "switch-frames", sorted(os.listdir(os.path.join(root, "switch-frames")))[1])
        )
    )
    testing = os.path.join(root, "split-videos", "testing", "30FPS")
    first = video_io.read_frames(os.path.join(testing, sorted(os.listdir(testing))[1]), [0])[0]
    assert jpg.shape == (SIZE, SIZE, 3)
    assert np.abs(jpg.astype(int) - first.astype(int)).mean() < 4


def test_descriptions_csv(written):
    _, _, rows = expected_layout()
    with open(
        os.path.join(written, "physics-IQ-benchmark", "descriptions", "descriptions.csv"), newline=""
    ) as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["scenario", "description", "category", "generated_video_name"]
    assert [(r["scenario"], r["generated_video_name"]) for r in table] == rows
    for r in table:
        vid = int(r["scenario"][:4])
        assert r["scenario"].split("_")[1] == VIEWS[(vid - 1) % 3]
        assert r["description"].endswith("Static shot with no camera movement.")
    for k in range(3 * M):  # a take-2 row repeats its take-1 row's set-up text
        assert table[k]["description"] == table[k + 3 * M]["description"]


def test_training_set(written):
    root = os.path.join(written, "train")
    lines = pathlib.Path(root, "index.txt").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        path, count = line.split("\t")
        assert int(count) == 64 == video_io.probe(os.path.join(root, path)).num_frames  # 8 s at 8 fps
    clips = ClipRecordSource(os.path.join(root, "clips"))
    assert len(clips) == 2 and clips.kind == "pixels"
    assert clips[0].arrays["video"].shape == (64, SIZE, SIZE, 3)
    decoded = video_io.read_frames(os.path.join(root, lines[0].split("\t")[0]), [10])[0]
    assert np.abs(decoded.astype(int) - clips[0].arrays["video"][10].astype(int)).mean() < 5  # H.264 at 32 px


def test_a_still_testing_part_is_not_a_test_case():
    """Balls at rest after the switch frame leave the benchmark's motion masks empty: no test case;
    one ball rolling across the room through the testing part is one."""
    scene = physics_scenes.sample_scene(np.random.default_rng(4), kind="ball-roll")
    resting = Ball(x=1.5, y=0.3, vx=0.0, vy=0.0, radius=0.3, restitution=0.6, color=(1.0, 0.2, 0.2))
    still = dataclasses.replace(scene, balls=(resting,))
    assert not synthetic_physics.testing_part_moves(still, 64, 64)
    rolling = dataclasses.replace(resting, x=0.5, vx=0.6, release_time=2.5)
    walled = dataclasses.replace(scene.world, rolling_resistance=0.0)
    assert synthetic_physics.testing_part_moves(
        dataclasses.replace(still, balls=(rolling,), world=walled), 64, 64
    )


def test_benchmark_scenes_are_drawn_again_until_the_testing_part_moves():
    """Scenario 3 of seed 0 (ball-roll) first draws a scene whose rolling ball is gone by the switch
    frame; the benchmark takes the next draw, which moves in every view."""
    first_draw = physics_scenes.sample_scene(
        synthetic_physics._seed(0, synthetic_physics._BENCHMARK, 2), 1.0, "ball-roll"
    )
    assert not synthetic_physics.testing_part_moves(first_draw, 64, 64)
    take_one, _ = synthetic_physics.benchmark_takes(0, 2, 64, 64)
    assert take_one != first_draw and take_one.kind == "ball-roll"
    assert synthetic_physics.testing_part_moves(take_one, 64, 64)


def test_training_videos_are_labelled_by_scene_kind(tmp_path):
    from data_pipelines.labelled_source import read_manifest

    root = synthetic_physics.write_training_set(str(tmp_path), 6, 16, 16, seconds=0.5)
    listing = read_manifest(os.path.join(root, "labels.jsonl"))
    assert not listing.counts and len(listing.videos) == 6
    kinds = ("ball-drop", "ball-throw", "ball-roll", "balls-collide")
    for video in listing.videos:  # the name ends with the kind the scene was drawn with
        assert video.video_id.removesuffix(".mp4").endswith("-" + kinds[video.label])
    assert len({v.label for v in listing.videos}) > 1
    train = [v.video_id for v in read_manifest(os.path.join(root, "labels_train.jsonl")).videos]
    test = [v.video_id for v in read_manifest(os.path.join(root, "labels_test.jsonl")).videos]
    ids = [v.video_id for v in listing.videos]
    assert test == [ids[3]] and train == ids[:3] + ids[4:]
