"""Sequence layout, clip partitions and the attention mask (spec §4.1–§5.4).

Every library result is compared with an independent reference written here: literal rows of the
spec's §5.2 picture, or a brute-force NumPy port of the official collator's mask, which walks the
official token sequence block by block and applies the rule in terms of *offsets inside a block*
(never the library's ``order`` attribute).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from spec_picture import SPEC_PICTURE_ROWS

from vgpt_jax.models import layout
from vgpt_jax.nn.tokens import CLEAN, NOISY, TokenAttrs, concat_attrs, visible

# ---------------------------------------------------------------------------------------------
# Independent reference: the official collator's point of view.
# A block is (is_noisy, clip, frame); a token is (is_noisy, clip, frame, offset in its block).
# ---------------------------------------------------------------------------------------------


def official_training_blocks(partition):
    """Blocks of the official training sequence [N(c1)][C(c1)][N(c2)][C(c2)]…[N(cK)]."""
    blocks, start = [], 0
    for clip, size in enumerate(partition):
        frames = range(start, start + size)
        blocks += [(True, clip, f) for f in frames]
        if clip != len(partition) - 1:
            blocks += [(False, clip, f) for f in frames]
        start += size
    return blocks


def official_inference_blocks(num_history, num_generated):
    """Blocks of the official inference sequence [C(0…n−1)][N(n…n+g−1)] (spec §4.4 / §5.3)."""
    history = [(False, 0, f) for f in range(num_history)]
    clip = [(True, 1, f) for f in range(num_history, num_history + num_generated)]
    return history + clip


def tokens_of(blocks, block_len):
    return [(noisy, clip, frame, off) for noisy, clip, frame in blocks for off in range(block_len)]


def may_see(q, k, block_len):
    """The official rule for query token q and key token k, expressed with block offsets."""
    q_noisy, q_clip, q_frame, q_off = q
    k_noisy, k_clip, k_frame, k_off = k
    last = block_len - 1
    if q_noisy and k_noisy:  # noisy -> noisy: own clip, <|diffusion|> / TIME / patches causal by slot
        return q_clip == k_clip and (k_off == 0 or (k_off == 1 and q_off >= 1) or (k_off >= 2 and q_off >= 2))
    if q_noisy:  # noisy -> clean: clean copies of strictly earlier clips
        return k_clip < q_clip
    if k_noisy:  # clean -> noisy: never
        return False
    # clean -> clean: frame-causal; inside a frame <img> / patches / </img> causal by slot
    if k_frame != q_frame:
        return k_frame < q_frame
    return k_off == 0 or (k_off == last and q_off == last) or (1 <= k_off <= last - 1 and q_off >= 1)


def reference_mask(blocks, tokens_per_frame):
    """Brute-force (T, T) bool mask and (T,) positions (frame·L + offset) of a block sequence."""
    block_len = tokens_per_frame + 2
    toks = tokens_of(blocks, block_len)
    mask = np.array([[may_see(q, k, block_len) for k in toks] for q in toks], dtype=bool)
    positions = np.array([frame * block_len + off for _, _, frame, off in toks], dtype=np.int64)
    return mask, positions


def random_partition(rng, num_frames):
    """A random composition of num_frames into 1…num_frames positive parts."""
    num_clips = int(rng.integers(1, num_frames + 1))
    cuts = np.sort(rng.choice(np.arange(1, num_frames), size=num_clips - 1, replace=False))
    return [int(b) for b in np.diff(np.concatenate([[0], cuts, [num_frames]]))]


def rows_to_strings(mask, rows):
    return ["".join("#" if v else "." for v in mask[r]) for r in rows]


# ---------------------------------------------------------------------------------------------
# The reference itself is checked against the spec's hand-drawn picture.
# ---------------------------------------------------------------------------------------------


def test_reference_reproduces_spec_picture():
    """Sanity of the brute-force reference: it reproduces the literal §5.2 rows and token count."""
    mask, positions = reference_mask(official_training_blocks([2, 1, 2]), 2)
    assert mask.shape == (32, 32)  # (2N − b_K)·L = (10 − 2)·4
    rows = sorted(SPEC_PICTURE_ROWS)
    assert rows_to_strings(mask, rows) == [SPEC_PICTURE_ROWS[r] for r in rows]
    # §4.3 by hand: noisy f0 at 0…3, noisy f1 at 4…7, clean f0 at 0…3, clean f1 at 4…7, noisy f2 at 8…11.
    np.testing.assert_array_equal(
        positions[:20], [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    )


# ---------------------------------------------------------------------------------------------
# official_order_mask
# ---------------------------------------------------------------------------------------------


def test_official_order_mask_matches_spec_picture():
    """§5.2 case: library mask rows equal the literal picture rows; whole mask equals brute force."""
    mask, positions = layout.official_order_mask([2, 1, 2], 2)
    assert mask.shape == (32, 32) and mask.dtype == np.bool_
    rows = sorted(SPEC_PICTURE_ROWS)
    assert rows_to_strings(mask, rows) == [SPEC_PICTURE_ROWS[r] for r in rows]
    ref_mask, ref_pos = reference_mask(official_training_blocks([2, 1, 2]), 2)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(positions, ref_pos)


# (N, S) shapes of the random cases. Each new shape costs ~1.5 s of eager XLA compilation on the CI
# CPU, so the partitions are random but the shapes cycle through a fixed set covering N ≤ 10, S ≤ 4.
RANDOM_CASE_SHAPES = [(2, 2), (3, 2), (5, 2), (7, 1), (9, 3), (10, 4)]


def test_official_order_mask_random_partitions():
    """36 random partitions (N ≤ 10, S ≤ 4): library mask and positions equal the brute-force port."""
    rng = np.random.default_rng(1234)
    for i in range(36):
        n, s = RANDOM_CASE_SHAPES[i % len(RANDOM_CASE_SHAPES)]
        partition = random_partition(rng, n)
        mask, positions = layout.official_order_mask(partition, s)
        ref_mask, ref_pos = reference_mask(official_training_blocks(partition), s)
        assert mask.shape == ((2 * n - partition[-1]) * (s + 2),) * 2, partition
        np.testing.assert_array_equal(mask, ref_mask, err_msg=f"partition={partition}, S={s}")
        np.testing.assert_array_equal(positions, ref_pos, err_msg=f"partition={partition}, S={s}")


@pytest.mark.parametrize("num_frames", [2, 3, 5, 16])
def test_official_order_mask_stage1(num_frames):
    """Stage 1 (every frame its own clip): library equals brute force for the all-ones partition.

    Also checked by hand-derivable counts: the noisy <|diffusion|> of frame f sees the f earlier
    clean frames in full (f·L keys) plus itself; the per-frame clip ids are 0…N−1.
    """
    s = 2
    block_len = s + 2
    partition = [1] * num_frames
    np.testing.assert_array_equal(layout.per_frame_clip_ids(num_frames), np.arange(num_frames))
    np.testing.assert_array_equal(layout.clip_ids_from_partition(partition), np.arange(num_frames))
    mask, positions = layout.official_order_mask(partition, s)
    ref_mask, ref_pos = reference_mask(official_training_blocks(partition), s)
    assert mask.shape == ((2 * num_frames - 1) * block_len,) * 2
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(positions, ref_pos)
    for f in range(num_frames):
        diffusion_row = 2 * f * block_len  # official order: N(0) C(0) N(1) C(1) …
        assert mask[diffusion_row].sum() == f * block_len + 1


# ---------------------------------------------------------------------------------------------
# Clip ids
# ---------------------------------------------------------------------------------------------


def test_clip_ids_from_partition_and_per_frame():
    """Literal expectations for small partitions."""
    np.testing.assert_array_equal(layout.clip_ids_from_partition([2, 1, 2]), [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(layout.clip_ids_from_partition([3]), [0, 0, 0])
    np.testing.assert_array_equal(layout.clip_ids_from_partition([1, 1]), [0, 1])
    assert layout.clip_ids_from_partition([1, 3]).dtype == np.int32
    np.testing.assert_array_equal(layout.per_frame_clip_ids(4), [0, 1, 2, 3])
    assert layout.per_frame_clip_ids(4).dtype == jnp.int32


@pytest.mark.parametrize("bad", [[], [0], [2, 0, 1], [-1], [3, -2], [[1, 2]]])
def test_clip_ids_from_partition_rejects_bad(bad):
    """Empty, zero-length, negative and non-1-D partitions raise ValueError."""
    with pytest.raises(ValueError):
        layout.clip_ids_from_partition(bad)


NUM_KEYS = 20000


@pytest.fixture(scope="module")
def sampled_clip_ids():
    keys = jax.random.split(jax.random.key(0), NUM_KEYS)
    ids = jax.jit(jax.vmap(lambda k: layout.random_clip_ids(k, 8)))(keys)
    return np.asarray(ids)


def test_random_clip_ids_structure(sampled_clip_ids):
    """Every sample is a valid contiguous partition: starts at 0, steps of 0/1, K = max+1 in [2, N]."""
    ids = sampled_clip_ids
    assert ids.shape == (NUM_KEYS, 8) and ids.dtype == np.int32
    assert np.all(ids[:, 0] == 0)
    steps = np.diff(ids, axis=1)
    assert np.all((steps == 0) | (steps == 1))
    k = ids.max(axis=1) + 1
    assert k.min() >= 2 and k.max() <= 8


def test_random_clip_ids_num_clips_uniform(sampled_clip_ids):
    """K ~ U{2…N} (spec §4.1): each of the 7 values within ±15% of NUM_KEYS/7 (≈6σ at this size)."""
    k = sampled_clip_ids.max(axis=1) + 1
    counts = np.bincount(k, minlength=9)[2:]
    expected = NUM_KEYS / 7
    assert np.all(np.abs(counts - expected) < 0.15 * expected), counts


def test_random_clip_ids_cut_points_uniform(sampled_clip_ids):
    """Given K, the K−1 cuts are uniform over {1…N−1}: each cut point frequency ≈ count·(K−1)/(N−1)."""
    ids = sampled_clip_ids
    k = ids.max(axis=1) + 1
    is_cut = np.diff(ids, axis=1) == 1  # cut before frame j+1, i.e. at point j+1 ∈ {1…7}
    np.testing.assert_array_equal(is_cut.sum(axis=1), k - 1)
    for num_clips in range(2, 8):  # K = 8 cuts everywhere: nothing to test
        sel = is_cut[k == num_clips]
        freq = sel.sum(axis=0)
        expected = len(sel) * (num_clips - 1) / 7
        assert np.all(np.abs(freq - expected) < 0.2 * expected), (num_clips, freq, expected)


# ---------------------------------------------------------------------------------------------
# training_layout: static [clean 0…N−1][noisy 0…N−1] with the last clip's clean copies as pad
# ---------------------------------------------------------------------------------------------


def expected_static_layout(clip_ids, tokens_per_frame):
    """Per-token expectations of [clean 0…N−1][noisy 0…N−1], written from the spec (§4.2, §4.3)."""
    n = len(clip_ids)
    block_len = tokens_per_frame + 2
    clean_order = [0] + [1] * tokens_per_frame + [2]
    noisy_order = [0, 1] + [2] * tokens_per_frame
    last = max(clip_ids)
    cols = {"kind": [], "frame": [], "clip": [], "order": [], "is_pad": [], "pos": []}
    for half, kind in ((0, CLEAN), (1, NOISY)):
        for f in range(n):
            for off in range(block_len):
                cols["kind"].append(kind)
                cols["frame"].append(f)
                cols["clip"].append(clip_ids[f])
                cols["order"].append((clean_order if kind == CLEAN else noisy_order)[off])
                cols["is_pad"].append(half == 0 and clip_ids[f] == last)
                cols["pos"].append(f * block_len + off)
    return {key: np.asarray(v) for key, v in cols.items()}


def assert_layout_equals(attrs, positions, expected):
    for name in ("kind", "frame", "clip", "order", "is_pad"):
        np.testing.assert_array_equal(np.asarray(getattr(attrs, name)), expected[name], err_msg=name)
    np.testing.assert_array_equal(np.asarray(positions), expected["pos"], err_msg="positions")


def test_training_layout_single():
    """Shape 2N·L, pad exactly on the last clip's clean blocks, positions f·L + offset in both halves."""
    clip_ids = [0, 0, 1, 2, 2]
    s = 3
    attrs, positions = layout.training_layout(jnp.asarray(clip_ids, jnp.int32), s)
    assert positions.shape == (2 * 5 * 5,)
    expected = expected_static_layout(clip_ids, s)
    assert_layout_equals(attrs, positions, expected)
    # pad tokens = clean blocks of frames 3 and 4 = tokens 15…24 (by hand)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(attrs.is_pad)), np.arange(15, 25))


def test_training_layout_batched():
    """clip_ids (B, N) with different partitions per row: every row equals its own expectation."""
    rows = [[0, 0, 1, 2, 2, 2], [0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1]]
    s = 2
    attrs, positions = layout.training_layout(jnp.asarray(rows, jnp.int32), s)
    assert positions.shape == (4, 2 * 6 * 4)
    for b, row in enumerate(rows):
        expected = expected_static_layout(row, s)
        assert_layout_equals(TokenAttrs(*(a[b] for a in attrs)), positions[b], expected)


def test_training_layout_traced_random_ids():
    """Under jit with random clip ids, pad flags follow the sampled last clip (reference: the ids)."""
    n, s = 8, 1

    @jax.jit
    def fn(key):
        ids = layout.random_clip_ids(key, n)
        return (ids, *layout.training_layout(ids, s))

    for seed in range(5):
        ids, attrs, positions = fn(jax.random.key(seed))
        assert_layout_equals(attrs, positions, expected_static_layout(np.asarray(ids).tolist(), s))


def test_training_layout_static_mask_matches_reference():
    """visible() on the static layout: real tokens, mapped to their official (kind, clip, frame, offset),
    follow the brute-force rule; pad rows are all True; real rows never see pad columns."""
    partition = [2, 1, 2]
    s = 2
    block_len = s + 2
    clip_ids = layout.clip_ids_from_partition(partition)
    n = len(clip_ids)
    attrs, _ = layout.training_layout(jnp.asarray(clip_ids), s)
    mask = np.asarray(visible(attrs, attrs))
    toks = [
        (half == 1, int(clip_ids[f]), f, off) for half in (0, 1) for f in range(n) for off in range(block_len)
    ]
    pad = np.array([not t[0] and t[1] == len(partition) - 1 for t in toks])
    assert np.all(mask[pad])
    assert not np.any(mask[np.ix_(~pad, pad)])
    real = np.flatnonzero(~pad)
    ref = np.array([[may_see(toks[q], toks[k], block_len) for k in real] for q in real])
    np.testing.assert_array_equal(mask[np.ix_(real, real)], ref)


# ---------------------------------------------------------------------------------------------
# visible(): pad rules on arbitrary attributes
# ---------------------------------------------------------------------------------------------


def test_visible_pad_rules_and_rule_on_random_attrs():
    """Random attributes: pad queries see every key; real queries never see a pad key; real/real pairs
    follow §5.1 written as a scalar Python rule on (kind, frame, clip, order)."""
    rng = np.random.default_rng(7)
    t = 40

    def rand_attrs():
        return TokenAttrs(
            kind=rng.integers(0, 2, t).astype(np.int32),
            frame=rng.integers(0, 4, t).astype(np.int32),
            clip=rng.integers(0, 3, t).astype(np.int32),
            order=rng.integers(0, 3, t).astype(np.int32),
            is_pad=rng.random(t) < 0.3,
        )

    q, k = rand_attrs(), rand_attrs()
    got = np.asarray(visible(TokenAttrs(*map(jnp.asarray, q)), TokenAttrs(*map(jnp.asarray, k))))
    assert got.shape == (t, t)

    def rule(i, j):
        if q.is_pad[i]:
            return True
        if k.is_pad[j]:
            return False
        if k.kind[j] == CLEAN:
            if q.kind[i] == CLEAN:
                return k.frame[j] < q.frame[i] or (k.frame[j] == q.frame[i] and k.order[j] <= q.order[i])
            return k.clip[j] < q.clip[i]
        return q.kind[i] == NOISY and q.clip[i] == k.clip[j] and k.order[j] <= q.order[i]

    expected = np.array([[rule(i, j) for j in range(t)] for i in range(t)])
    np.testing.assert_array_equal(got, expected)
    assert np.all(got[q.is_pad])
    assert not np.any(got[np.ix_(~q.is_pad, k.is_pad)])


# ---------------------------------------------------------------------------------------------
# Sampling layouts: [clean history 0…n−1] + [noisy clip n…n+g−1]
# ---------------------------------------------------------------------------------------------


SAMPLING_CASES = [(0, 3, 2), (1, 1, 1), (4, 2, 2), (5, 3, 1)]


@pytest.mark.parametrize(("num_history", "num_generated", "s"), SAMPLING_CASES)
def test_sampling_layout_matches_inference_reference(num_history, num_generated, s):
    """history_layout + generation_layout, evaluated by visible(), equal the brute-force official
    inference mask (§5.3); positions are frame·L + offset for history 0…n−1 and clip n…n+g−1."""
    hist_attrs, hist_pos = layout.history_layout(num_history, s)
    gen_attrs, gen_pos = layout.generation_layout(num_history, num_generated, s)
    attrs = concat_attrs(hist_attrs, gen_attrs)
    mask = np.asarray(visible(attrs, attrs))
    ref_mask, ref_pos = reference_mask(official_inference_blocks(num_history, num_generated), s)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(np.concatenate([np.asarray(hist_pos), np.asarray(gen_pos)]), ref_pos)
    assert not np.any(np.asarray(attrs.is_pad))


@pytest.mark.parametrize(("num_history", "num_generated", "s"), SAMPLING_CASES)
def test_inference_reference_is_training_submatrix(num_history, num_generated, s):
    """§5.3 'verified equal to the training-mask sub-matrix': for several partitions of the first n frames
    followed by a last clip of g frames, the brute-force training mask restricted to clean frames
    0…n−1 and the last clip's noisy blocks equals the brute-force inference mask — and so does the
    library's sampling-layout mask."""
    block_len = s + 2
    ref_inference, _ = reference_mask(official_inference_blocks(num_history, num_generated), s)
    hist_attrs, _ = layout.history_layout(num_history, s)
    gen_attrs, _ = layout.generation_layout(num_history, num_generated, s)
    attrs = concat_attrs(hist_attrs, gen_attrs)
    np.testing.assert_array_equal(np.asarray(visible(attrs, attrs)), ref_inference)

    rng = np.random.default_rng(num_history * 10 + num_generated)
    heads = (
        [[]] if num_history == 0 else [[num_history], [1] * num_history, random_partition(rng, num_history)]
    )
    for head in heads:
        partition = [*head, num_generated]
        blocks = official_training_blocks(partition)
        last_clip = len(partition) - 1
        clean_idx = {f: i for i, (noisy, _, f) in enumerate(blocks) if not noisy}
        noisy_idx = {f: i for i, (noisy, c, f) in enumerate(blocks) if noisy and c == last_clip}
        chosen = [clean_idx[f] for f in range(num_history)]
        chosen += [noisy_idx[f] for f in range(num_history, num_history + num_generated)]
        token_idx = (np.asarray(chosen, dtype=np.int64)[:, None] * block_len + np.arange(block_len)).reshape(
            -1
        )
        train_mask, _ = reference_mask(blocks, s)
        np.testing.assert_array_equal(
            train_mask[np.ix_(token_idx, token_idx)], ref_inference, err_msg=str(partition)
        )
