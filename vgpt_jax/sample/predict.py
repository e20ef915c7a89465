"""Video prediction in pixels: conditioning frames in, the predicted continuation out, at the input's size.

For a batch of videos, (K, H, W, 3) uint8 each:

1. each is brought to the model's resolution as training clips are: ``crop_arr`` at
   ``config.data.max_image_size``, then the bucket of ``config.data.latent_{height,width}`` times the
   tokenizer's downsampling;
2. the tokenizer encodes them (a posterior sample, as the release does at inference, spec §2);
3. :meth:`Sampler.rollout` predicts the frames clip by clip; every generated clip is decoded to
   uint8 RGB, which is the output, and re-encoded as history for the later rounds (spec §9.2);
4. the frames are resized back to the input's size.

Batches hold ``data-parallel size × config.data.per_device_batch_size`` videos, split over the
mesh; a last partial batch is padded by repeating its last video. Batch i samples with
``config.sampling.seed`` folded with i, so no two batches draw the same noise.

A conditioned checkpoint (``config.condition.kind`` "class" or "text", DESIGN §8) takes one row of
condition ids per video (:func:`condition_ids` of class ids or prompts), and
:meth:`Predictor.generate` makes videos from them alone (or, unconditioned, from nothing).
Pictures condition as clean history frames, through the same path as a video's (DESIGN §8):
:func:`animate_file`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from PIL import Image, ImageOps

from data_pipelines import transforms, video_io
from data_pipelines.text_tokens import load_text_tokenizer, text_ids
from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.inference import inference_mesh, load_for_inference
from vgpt_jax.models.clip_tokenizer import ClipTokenizer
from vgpt_jax.models.video_gpt import inference_params, model_from_config
from vgpt_jax.parallel import mesh as mesh_lib
from vgpt_jax.parallel.mesh import sharding_context
from vgpt_jax.sample.sampler import Sampler


def sampling_overrides(**sampling) -> list[str]:
    """``FIELD=VALUE`` overrides of ``config.sampling`` for the non-None keyword arguments."""
    return [f"sampling.{name}={value!r}" for name, value in sampling.items() if value is not None]


def with_sampling(config: ml_collections.ConfigDict, **sampling) -> ml_collections.ConfigDict:
    """A validated copy of ``config`` whose ``sampling`` fields are replaced by the non-None ``sampling``."""
    return config_lib.validate(config_lib.apply_overrides(config, sampling_overrides(**sampling)))


def to_model_resolution(frames: np.ndarray, max_image_size: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) uint8: crop_arr, then the resolution bucket."""
    frames = np.stack([transforms.crop_arr(f, max_image_size) for f in frames])
    return transforms.fit_to_bucket(frames, height, width)


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, height, width, 3) uint8, bicubic, stretched (aspect not kept)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in frames]
    )


def to_uint8(pixels: jax.Array) -> jax.Array:
    """[0, 1] floats -> uint8, rounded to the nearest level (as diffusers' image processor does)."""
    return jnp.round(jnp.clip(pixels, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def batch_size(config: ml_collections.ConfigDict, mesh: Mesh) -> int:
    """Videos a :class:`Predictor` samples at once on ``mesh``: data-parallel size × per-device batch."""
    return mesh_lib.data_parallel_size(mesh) * config.data.per_device_batch_size


def condition_ids(
    config: ml_collections.ConfigDict,
    class_ids: Sequence[int] | None = None,
    prompts: Sequence[str] | None = None,
) -> np.ndarray | None:
    """The ids of ``config.condition`` for n rows: class ids (n,) int32, the prompts' token ids
    (n, P) int32 (-1 pads, see :mod:`data_pipelines.text_tokens`), or None without a condition.

    ValueError, naming the flag and the checkpoint's ``condition.kind``, unless what is given fits
    it: class ids in [0, num_classes] (num_classes: the null class) for "class", prompts for
    "text", neither for "none".
    """
    co = config.condition
    given = {"class": class_ids, "text": prompts}
    for kind, flag in (("class", "--class-id"), ("text", "--prompt")):
        if given[kind] is not None and co.kind != kind:
            raise ValueError(
                f"{flag} needs a {kind}-conditioned checkpoint; this one has condition.kind = {co.kind!r}"
            )
    if co.kind == "none":
        return None
    if co.kind == "text":
        if prompts is None:
            raise ValueError(
                f"this checkpoint is text-conditioned: pass --prompt TEXT (up to {co.max_text_tokens} tokens)"
            )
        tokenizer = load_text_tokenizer(co.text_tokenizer)
        return np.stack(
            [text_ids(tokenizer, p, co.max_text_tokens, config.model.vocab_size) for p in prompts]
        )
    if class_ids is None:
        raise ValueError(
            f"this checkpoint is class-conditioned ({co.num_classes} classes): pass --class-id K, "
            f"0 <= K < {co.num_classes}, or K = {co.num_classes} (the null class) for no class"
        )
    wrong = [k for k in class_ids if not 0 <= k <= co.num_classes]
    if wrong:
        raise ValueError(
            f"class id {wrong[0]} is outside the table: 0 <= K < {co.num_classes}, or K = {co.num_classes} "
            "(the null class)"
        )
    return np.asarray(class_ids, np.int32)


def null_condition_ids(config: ml_collections.ConfigDict, n: int) -> np.ndarray | None:
    """The null condition of n rows (the null class, an all-pad text), None without a condition:
    a conditioned model's unconditioned prediction, which condition dropout trained it for."""
    co = config.condition
    if co.kind == "class":
        return np.full((n,), co.num_classes, np.int32)
    if co.kind == "text":
        return np.full((n, co.max_text_tokens), -1, np.int32)
    return None


def _to_host(x: jax.Array) -> np.ndarray:
    """A sharded array as one NumPy array on every process."""
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class _Reencoder:
    """The release's history path: each generated clip (B, g, h, w, C) is decoded to uint8 RGB, kept
    (those pixels are the output), and re-encoded with a fresh posterior sample as history."""

    def __init__(self, tokenizer: ClipTokenizer, key: jax.Array):
        self.tokenizer, self.key = tokenizer, key
        self.pixels: list[jax.Array] = []  # (B, g, H, W, 3) uint8 per round

    def __call__(self, latents: jax.Array) -> jax.Array:
        pixels = to_uint8(self.tokenizer.decode_to_pixels(latents))
        self.pixels.append(pixels)
        # The last round's re-encoding goes unused: rollout does not say which round is the last.
        return self.tokenizer.encode(
            transforms.uint8_to_signed(pixels), jax.random.fold_in(self.key, len(self.pixels))
        )


class Predictor:
    """A Video-GPT with its tokenizer and sampler, predicting pixel videos in batches over a mesh."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        params,
        tokenizer: ClipTokenizer,
        mesh: Mesh | None = None,
    ):
        self.config = config
        model = model_from_config(config)
        # None: the caller sets ``params`` before predicting (the training evaluation's live weights)
        self.params = None if params is None else inference_params(model.cfg, params)
        self.tokenizer = tokenizer
        self.mesh = inference_mesh(config) if mesh is None else mesh
        self.sampler = Sampler(config, model)
        d = config.data
        f = tokenizer.cfg.downsample_factor
        self.frame_size = (d.latent_height * f, d.latent_width * f)  # (height, width) in pixels
        self.batch_size = batch_size(config, self.mesh)
        self._batch_sharding = mesh_lib.batch_sharding(self.mesh, 5)
        self._latent_shape = (d.latent_height, d.latent_width, config.model.latent_channels)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        mesh: Mesh | None = None,
        overrides: Sequence[str] = (),
        **sampling,
    ) -> Predictor:
        """From a training workdir or an export, with the checkpoint's own settings.

        ``overrides`` (``FIELD=VALUE``) and ``sampling`` (non-None ``config.sampling`` fields by
        name) replace single fields of the checkpoint's config.
        """
        overrides = [*overrides, *sampling_overrides(**sampling)]
        config, params, tokenizer = load_for_inference(path, mesh, overrides)
        return cls(config, params, tokenizer, tokenizer.mesh)

    def _padded(self, rows: Sequence) -> np.ndarray:
        """n <= batch_size rows -> (batch_size, ...), the last row repeated."""
        return np.stack([*rows, *[rows[-1]] * (self.batch_size - len(rows))])

    def _predict_batch(
        self,
        videos: Sequence[np.ndarray] | int,
        num_frames: int,
        progress: bool,
        condition: np.ndarray | None,
        batch_index: int,
    ) -> np.ndarray:
        """n <= batch_size videos (K, h, w, 3) uint8 at the model size, or n videos from nothing
        (an int), with n rows of condition ids or None -> (n, num_frames, h, w, 3) uint8.

        ``batch_index`` is folded into the seed: every batch would otherwise draw the noise of the
        first, and repeat its videos where the conditions repeat."""
        key = jax.random.fold_in(jax.random.key(self.config.sampling.seed), batch_index)
        encode_key, sample_key = jax.random.split(key)
        if isinstance(videos, int):
            n = videos
            context = jnp.zeros((self.batch_size, 0, *self._latent_shape), jnp.float32)
        else:
            n = len(videos)
            pixels = transforms.uint8_to_signed(self._padded(videos))
            context = self.tokenizer.encode(pixels, jax.random.fold_in(encode_key, 0))
        context = jax.device_put(context, self._batch_sharding)
        if condition is not None:
            condition = self._padded(condition)
            condition = jax.device_put(condition, mesh_lib.batch_sharding(self.mesh, condition.ndim))
        reencode = _Reencoder(self.tokenizer, encode_key)
        with sharding_context(self.mesh, self.config.mesh.logical_axis_rules):
            self.sampler.rollout(
                self.params, context, num_frames, sample_key, reencode, progress, condition=condition
            )
        return _to_host(jnp.concatenate(reencode.pixels, axis=1))[:n]

    def predict(
        self,
        videos: Sequence[np.ndarray],
        num_frames: int,
        progress: bool = False,
        condition: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Predicts ``num_frames`` frames after each video.

        videos: (K, H_i, W_i, 3) uint8 RGB, one K for all (sizes may differ); ``condition``: a
        conditioned checkpoint's ids, one row per video (:func:`condition_ids`, or
        :func:`null_condition_ids` for none). Returns one (num_frames, H_i, W_i, 3) uint8 array per
        video.
        """
        lengths = {len(v) for v in videos}
        if len(lengths) != 1:
            raise ValueError(f"the videos have different numbers of conditioning frames {sorted(lengths)}")
        self._check_condition(condition, len(videos))
        height, width = self.frame_size
        max_size = self.config.data.max_image_size
        out = []
        for start in range(0, len(videos), self.batch_size):
            chunk = videos[start : start + self.batch_size]
            resized = [to_model_resolution(v, max_size, height, width) for v in chunk]
            rows = None if condition is None else condition[start : start + self.batch_size]
            predicted = self._predict_batch(resized, num_frames, progress, rows, start // self.batch_size)
            out += [resize(p, *v.shape[1:3]) for p, v in zip(predicted, chunk, strict=True)]
        return out

    def generate(
        self,
        condition: np.ndarray | None,
        num_frames: int,
        progress: bool = False,
        num_videos: int | None = None,
        first_batch: int = 0,
    ) -> list[np.ndarray]:
        """Class- or text-to-video: ``num_frames`` frames from nothing but each row of condition ids
        (:func:`condition_ids`); an unconditioned model: ``num_videos`` videos from nothing
        (``condition`` None). Returns one (num_frames, H, W, 3) uint8 array per video at the
        model's frame size (:attr:`frame_size`).

        ``first_batch``: the index of the first batch, for the seed. Videos i·batch_size onwards of
        a call with ``first_batch = i`` are those of one call for them all, so a set can be made
        in parts (``vgpt generate-set`` resumes so).
        """
        n = len(condition) if num_videos is None else num_videos
        self._check_condition(condition, n)
        out = []
        for start in range(0, n, self.batch_size):
            count = min(self.batch_size, n - start)
            rows = None if condition is None else condition[start : start + count]
            batch_index = first_batch + start // self.batch_size
            out += list(self._predict_batch(count, num_frames, progress, rows, batch_index))
        return out

    def _check_condition(self, condition: np.ndarray | None, num_videos: int) -> None:
        """ValueError unless ``condition`` has one row per video exactly when the model has one (a
        conditioned model without its prefix would be off the distribution it learnt)."""
        kind = self.config.condition.kind
        if (condition is None) != (kind == "none"):
            raise ValueError(
                f"condition ids {'missing' if condition is None else 'given'} for a model whose "
                f"condition.kind is {kind!r}: see condition_ids and null_condition_ids"
            )
        if condition is not None and len(condition) != num_videos:
            raise ValueError(f"{len(condition)} conditions for {num_videos} videos: give one per video")


def predict_file(
    checkpoint: str | os.PathLike,
    video: str | os.PathLike,
    output: str | os.PathLike,
    cond_frames: int,
    num_frames: int,
    stride: int = 1,
    fps: int | None = None,
    with_context: bool = False,
    overrides: Sequence[str] = (),
    class_id: int | None = None,
    prompt: str | None = None,
    **sampling,
) -> int:
    """`vgpt sample`: predicts ``num_frames`` frames after the first ``cond_frames`` of ``video``.

    The conditioning frames are every ``stride``-th frame from the first (the release reads every
    4th). ``output`` gets the prediction (after the conditioning frames with ``with_context``) at
    the input's size, at ``fps`` (default: the input's fps / stride, rounded). The sampler's settings
    are the checkpoint's ``config.sampling``; ``overrides`` and ``sampling`` replace single fields
    (see :meth:`Predictor.from_checkpoint`). ``class_id`` or ``prompt``: the condition of a
    conditioned checkpoint (see :func:`condition_ids`). Returns the frame count.
    """
    _prepare_output(output)
    info = video_io.probe_video(video)
    needed = (cond_frames - 1) * stride + 1
    if info.num_frames < needed:
        raise ValueError(
            f"{video} has {info.num_frames} frames, fewer than the {needed} that {cond_frames} conditioning "
            f"frames at stride {stride} span: lower --cond-frames or --stride"
        )
    context = video_io.read_video(video, range(0, needed, stride))
    fps = fps or max(1, round(info.fps / stride))
    return _write_prediction(
        checkpoint, context, output, num_frames, fps, with_context, overrides, class_id, prompt, **sampling
    )


def read_pictures(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Pictures (PNG, JPEG, anything PIL reads) as frames: (K, H, W, 3) uint8 RGB, in order.

    FileNotFoundError for a missing file; ValueError naming a file PIL cannot read, or the sizes
    when the pictures differ (they become the frames of one video).
    """
    frames = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the picture {path} does not exist")
        try:
            with Image.open(path) as picture:
                # a camera's portrait photo is stored landscape with an EXIF rotation; apply it
                frames.append(np.asarray(ImageOps.exif_transpose(picture).convert("RGB")))
        except OSError as error:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise ValueError(f"cannot read the picture {path}: {error}") from None
    if len({f.shape for f in frames}) > 1:
        described = ", ".join(
            f"{Path(p).name} {f.shape[1]}x{f.shape[0]}" for p, f in zip(paths, frames, strict=True)
        )
        raise ValueError(f"the pictures differ in size ({described}): give pictures of one size")
    return np.stack(frames)


def animate_file(
    checkpoint: str | os.PathLike,
    pictures: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    num_frames: int,
    fps: int | None = None,
    with_context: bool = False,
    overrides: Sequence[str] = (),
    class_id: int | None = None,
    prompt: str | None = None,
    **sampling,
) -> int:
    """`vgpt sample --image`: predicts ``num_frames`` frames after the ``pictures`` (one or more of
    one size), which are the K conditioning frames exactly as a video's first K frames would be
    (:func:`read_pictures`, then :meth:`Predictor.predict`). ``output`` is at the pictures' size and
    ``fps`` (default: the checkpoint's ``config.train.sample_fps``); the rest as
    :func:`predict_file`. Returns the frame count."""
    _prepare_output(output)
    context = read_pictures(pictures)
    return _write_prediction(
        checkpoint, context, output, num_frames, fps, with_context, overrides, class_id, prompt, **sampling
    )


def _write_prediction(
    checkpoint: str | os.PathLike,
    context: np.ndarray,
    output: str | os.PathLike,
    num_frames: int,
    fps: int | None,
    with_context: bool,
    overrides: Sequence[str],
    class_id: int | None,
    prompt: str | None,
    **sampling,
) -> int:
    """The part :func:`predict_file` and :func:`animate_file` share: ``num_frames`` frames predicted
    after ``context`` (K, H, W, 3) uint8, written to ``output`` at ``fps`` (None: the checkpoint's
    ``train.sample_fps``). Returns the frame count."""
    predictor = Predictor.from_checkpoint(checkpoint, overrides=overrides, **sampling)
    condition = condition_ids(predictor.config, _one(class_id), _one(prompt))
    (predicted,) = predictor.predict([context], num_frames, progress=True, condition=condition)
    frames = np.concatenate([context, predicted]) if with_context else predicted
    video_io.write_mp4(output, frames, fps or predictor.config.train.sample_fps)
    return len(frames)


def generate_file(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    num_frames: int,
    class_id: int | None = None,
    prompt: str | None = None,
    fps: int | None = None,
    overrides: Sequence[str] = (),
    **sampling,
) -> int:
    """`vgpt sample --class-id K` or ``--prompt TEXT`` without a video: ``num_frames`` frames of
    that condition from a conditioned checkpoint, at the model's frame size and ``fps`` (default:
    the checkpoint's ``config.train.sample_fps``). Settings as :func:`predict_file`. Returns the
    frame count."""
    _prepare_output(output)
    predictor = Predictor.from_checkpoint(checkpoint, overrides=overrides, **sampling)
    condition = condition_ids(predictor.config, _one(class_id), _one(prompt))
    if condition is None:
        raise ValueError("generating without a video needs a class- or text-conditioned checkpoint")
    (frames,) = predictor.generate(condition, num_frames, progress=True)
    video_io.write_mp4(output, frames, fps or predictor.config.train.sample_fps)
    return len(frames)


def _one(condition: int | str | None) -> list | None:
    """One video's condition as a list of one, or None."""
    return None if condition is None else [condition]


def _prepare_output(output: str | os.PathLike) -> None:
    """Makes ``output``'s folder; FileExistsError if ``output`` is a folder (before sampling, which
    takes minutes)."""
    if Path(output).is_dir():
        raise FileExistsError(
            f"--output {output} is a folder: pass the path of the .mp4 file to write, e.g. "
            f"{Path(output) / 'prediction.mp4'}"
        )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
