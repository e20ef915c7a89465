"""Clean-stream features of a Video-GPT for every video of a labelled set (``vgpt features``).

Each video gives ``views`` clips of ``num_frames`` frames, ``stride`` frames apart, their starts
spread evenly over the video (a video shorter than a clip repeats its last frame, and is counted).
A clip is brought to the model's resolution as training clips are (``crop_arr``, then the bucket),
encoded by the tokenizer (the posterior mean: features do not depend on a noise draw), and run
through the clean stream only, the first ``max(layers)`` layers
(:func:`~vgpt_jax.models.video_gpt.clean_stream_features`). The patch tokens after each layer
(not the ``<img>``/``</img>`` markers) are pooled (:data:`POOLINGS`), and a video's views are
averaged. With ``pixels`` the clip's own pixels, cut into the image patches the model's tokens
cover (``patch_size × downsample`` pixels a side) and pooled the same way, are the baseline.

The output folder::

    features_meta.json       what was extracted: model, weights, layers, pooling, views, frames, data
    shards/chunk_NNNNNN.npz  one per chunk of videos, written complete then renamed (the resume unit)
    features_L{layer}.npz    features (N, D) or, pooled per frame, (N, F, D) float32; video_ids (N,);
                             labels (N,) int64, -1 for a video without one; class_names; meta (JSON)
    features_pixels.npz      with pixels: the same fields for the raw-pixel baseline

A folder whose ``features_meta.json`` describes another extraction (other layers, pooling, model,
weights, data, ...) is refused, so features that do not belong together never share a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from data_pipelines import transforms, video_io
from data_pipelines.labelled_source import LabelledVideo
from vgpt_jax.evaluation.fvd import prefetched
from vgpt_jax.models.clip_tokenizer import ClipTokenizer
from vgpt_jax.models.video_gpt import (
    ModelConfig,
    abstract_params,
    check_feature_layers,
    clean_stream_features,
    example_inputs,
    model_from_config,
)
from vgpt_jax.parallel import mesh as mesh_lib
from vgpt_jax.parallel.mesh import sharding_context
from vgpt_jax.sample.predict import to_model_resolution

POOLINGS = {
    "mean": "mean over every patch token of every frame",
    "last": "mean over the patch tokens of the last frame",
    "frames": "mean over each frame's patch tokens, frames kept apart",
}
META_FILE = "features_meta.json"
SHARDS_DIR = "shards"
PIXELS = "pixels"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What is extracted from each video."""

    layers: tuple[int, ...]
    pooling: str = "mean"
    views: int = 1
    num_frames: int = 16
    stride: int = 1
    pixels: bool = False

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))  # as the model runs them
        if self.pooling not in POOLINGS:
            raise ValueError(f"--pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        for name in ("views", "num_frames", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: must be at least 1")

    @property
    def span(self) -> int:
        """Source frames one clip covers."""
        return (self.num_frames - 1) * self.stride + 1

    def describe(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "pooling": self.pooling,
            "pooling_means": POOLINGS[self.pooling],
            "views": self.views,
            "num_frames": self.num_frames,
            "stride": self.stride,
            "pixels": self.pixels,
        }


def layer_name(layer: int) -> str:
    return f"L{layer}"


def output_file(name: str) -> str:
    """``features_L8.npz`` for layer name ``L8``, ``features_pixels.npz`` for the pixel baseline."""
    return f"features_{name}.npz"


# --- clips ----------------------------------------------------------------------------------------


def clip_indices(num_video_frames: int, spec: FeatureSpec) -> np.ndarray:
    """Frame indices of the views of a video: (views, num_frames) int64, starts evenly spread over
    the video; indices past its end repeat its last frame."""
    starts = np.round(np.linspace(0, max(num_video_frames - spec.span, 0), spec.views)).astype(np.int64)
    indices = starts[:, None] + spec.stride * np.arange(spec.num_frames)[None, :]
    return np.minimum(indices, num_video_frames - 1)


def read_views(path: str, spec: FeatureSpec, size: tuple[int, int], max_image_size: int):
    """(views (V, F, height, width, 3) uint8 at the model's resolution, whether the video is shorter
    than a clip). Raises :class:`~data_pipelines.video_io.BadVideoError` if it cannot be read."""
    num_frames = video_io.probe(path).num_frames
    indices = clip_indices(num_frames, spec)
    frames = video_io.read_frames(path, indices.reshape(-1).tolist())
    frames = to_model_resolution(frames, max_image_size, *size)
    return frames.reshape(*indices.shape, *frames.shape[1:]), num_frames < spec.span


# --- pooling and the model ------------------------------------------------------------------------


def pool_tokens(tokens: jax.Array, pooling: str) -> jax.Array:
    """Tokens (..., F, S, D) -> (..., D) for 'mean' and 'last', (..., F, D) for 'frames'; fp32."""
    tokens = tokens.astype(jnp.float32)
    if pooling == "mean":
        return tokens.mean(axis=(-3, -2))
    if pooling == "last":
        return tokens[..., -1, :, :].mean(axis=-2)
    return tokens.mean(axis=-2)


def pooled_features(
    cfg: ModelConfig, params, latents: jax.Array, layers: tuple[int, ...], pooling: str
) -> jax.Array:
    """latents (B, F, h, w, C) -> pooled patch tokens after each layer, (len(layers), B, [F,] D) fp32."""
    hidden = clean_stream_features(cfg, params, latents, layers)
    return pool_tokens(hidden[:, :, :, 1:-1], pooling)  # drop <img> and </img>


def pixel_tokens(pixels: np.ndarray, side: int) -> np.ndarray:
    """(B, F, H, W, 3) -> (B, F, S, side·side·3): the image patch each model token covers, raster order."""
    b, f, h, w, c = pixels.shape
    x = pixels.reshape(b, f, h // side, side, w // side, side, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, f, (h // side) * (w // side), side * side * c)


def random_model_params(config: ml_collections.ConfigDict, mesh: Mesh, seed: int):
    """Freshly initialised Video-GPT parameters (the training init), laid out on ``mesh``."""
    model = model_from_config(config)
    shardings = jax.tree.map(lambda a: a.sharding, abstract_params(config, mesh))

    def init(key):
        return nn.unbox(model.init(key, *example_inputs(config, num_frames=2))["params"])

    with sharding_context(mesh, config.mesh.logical_axis_rules):
        return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def weights_fingerprint(params) -> str:
    """A short hash of the first values of every parameter: tells two sets of weights apart without
    reading them whole (and without reductions, whose rounding would depend on the mesh)."""
    digest = hashlib.sha1()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        corner = leaf[(0,) * (leaf.ndim - 1)][:8] if leaf.ndim else leaf
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.asarray(corner, np.float32).tobytes())
    return digest.hexdigest()[:16]


class Extractor:
    """A model, its tokenizer and a mesh: uint8 clips (n, F, H, W, 3) -> ``{name: (n, [F,] D)}`` for
    every layer name (:func:`layer_name`) and, with ``spec.pixels``, :data:`PIXELS`.

    Clips go in global batches of ``batch_per_device ×`` the mesh's data-parallel size, split over
    the ('data', 'fsdp') axes; a last partial batch is padded by repeating its last clip. One
    process (its local devices).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        params,
        tokenizer: ClipTokenizer,
        mesh: Mesh,
        spec: FeatureSpec,
        batch_per_device: int,
    ):
        if jax.process_count() > 1:
            raise ValueError("feature extraction runs in one process (over its local devices)")
        self.cfg = ModelConfig.from_config(config)
        self.layers = check_feature_layers(spec.layers, self.cfg.num_layers)
        self.params, self.tokenizer, self.mesh, self.spec = params, tokenizer, mesh, spec
        self.axis_rules = config.mesh.logical_axis_rules
        self.batch_size = batch_per_device * mesh_lib.data_parallel_size(mesh)
        downsample, d = tokenizer.cfg.downsample_factor, config.data
        self.frame_size = (d.latent_height * downsample, d.latent_width * downsample)  # pixels (H, W)
        self.max_image_size = d.max_image_size
        self.token_side = self.cfg.patch_size * downsample
        self._sharding = mesh_lib.batch_sharding(mesh, 5)
        self._features = jax.jit(pooled_features, static_argnums=(0, 3, 4))

    @property
    def names(self) -> list[str]:
        return [layer_name(layer) for layer in self.layers] + ([PIXELS] if self.spec.pixels else [])

    def _batch(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        pixels = transforms.uint8_to_signed(clips)
        latents = jax.device_put(self.tokenizer.encode(pixels), self._sharding)
        with sharding_context(self.mesh, self.axis_rules):
            pooled = np.asarray(
                self._features(self.cfg, self.params, latents, self.layers, self.spec.pooling)
            )
        out = {layer_name(layer): pooled[i] for i, layer in enumerate(self.layers)}
        if self.spec.pixels:
            out[PIXELS] = np.asarray(
                pool_tokens(pixel_tokens(np.asarray(pixels), self.token_side), self.spec.pooling)
            )
        return out

    def __call__(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        n, parts = len(clips), []
        for start in range(0, n, self.batch_size):
            chunk = clips[start : start + self.batch_size]
            padding = np.repeat(chunk[-1:], self.batch_size - len(chunk), axis=0)
            parts.append(self._batch(np.concatenate([chunk, padding])))
        return {name: np.concatenate([p[name] for p in parts])[:n] for name in self.names}


# --- a labelled set, resumable --------------------------------------------------------------------


def data_identity(videos: Sequence[LabelledVideo]) -> dict[str, Any]:
    """The number of videos and a hash of their ids and labels (chunks index into this list)."""
    digest = hashlib.sha1("\n".join(f"{v.video_id}\t{v.label}" for v in videos).encode())
    return {"videos": len(videos), "ids_sha1": digest.hexdigest()[:16]}


def check_folder(out: pathlib.Path, meta: dict[str, Any]) -> None:
    """Writes ``meta`` to a new folder, or checks it against the folder's; FileExistsError naming the
    fields that differ if the folder holds another extraction, or features without a meta file."""
    meta = json.loads(json.dumps(meta))  # as it reads back (tuples become lists)
    path = out / META_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        diffs = [k for k in sorted(set(saved) | set(meta)) if saved.get(k) != meta.get(k)]
        if diffs:
            shown = "; ".join(f"{k}: {saved.get(k)!r} there, {meta.get(k)!r} here" for k in diffs)
            raise FileExistsError(
                f"{out} holds features of another extraction ({shown}): features of different "
                f"layers, models or settings are not mixed in one folder; use another --output-dir, "
                f"or delete {out} to start over"
            )
        return
    found = sorted(p.name for p in [*out.glob("features_*.npz"), *out.glob(f"{SHARDS_DIR}/*.npz")])
    if found:
        raise FileExistsError(
            f"{out} holds features ({found[0]}, ...) without {META_FILE}, so what they are is unknown: "
            "use another --output-dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))


def write_atomically(path: pathlib.Path, write: Callable[[pathlib.Path], Any]) -> None:
    """``write(partial)`` then a rename: a file that exists under its name is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial.{path.name}")
    write(partial)
    os.replace(partial, path)


def _chunk_path(out: pathlib.Path, index: int) -> pathlib.Path:
    return out / SHARDS_DIR / f"chunk_{index:06d}.npz"


def extract_chunk(videos: Sequence[LabelledVideo], extractor: Extractor) -> dict[str, np.ndarray]:
    """Features of the readable videos of a chunk, views averaged, with their ids and labels and the
    ids of the unreadable and of the short ones."""
    spec, kept, unreadable, short, clips = extractor.spec, [], [], [], []

    def read(video: LabelledVideo):
        try:
            return read_views(video.path, spec, extractor.frame_size, extractor.max_image_size)
        except video_io.BadVideoError as error:
            return error

    for video, result in zip(videos, prefetched(read, videos), strict=True):
        if isinstance(result, video_io.BadVideoError):
            unreadable.append(video.video_id)
            continue
        kept.append(video)
        clips.append(result[0])
        if result[1]:
            short.append(video.video_id)
    record = {
        "video_ids": np.asarray([v.video_id for v in kept], dtype=str),
        "labels": np.asarray([-1 if v.label is None else v.label for v in kept], np.int64),
        "unreadable": np.asarray(unreadable, dtype=str),
        "short": np.asarray(short, dtype=str),
    }
    if kept:
        features = extractor(np.concatenate(clips))
        for name, values in features.items():
            record[name] = values.reshape(len(kept), spec.views, *values.shape[1:]).mean(axis=1)
    return record


def extract_folder(
    extractor: Extractor,
    videos: Sequence[LabelledVideo],
    out: str | pathlib.Path,
    meta: dict[str, Any],
    chunk_videos: int = 64,
    class_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Features of every video into ``out`` (see the module docstring); returns a summary.

    ``meta`` names the model and the data; the spec, a fingerprint of the weights, the list of
    videos and the chunking are added and checked against the folder's. Finished chunks are
    skipped, so an interrupted run continues where it stopped.
    """
    out = pathlib.Path(out)
    meta = {
        **meta,
        "spec": extractor.spec.describe(),
        "weights": weights_fingerprint(extractor.params),
        "frame_size": list(extractor.frame_size),
        "data_identity": data_identity(videos),
        "chunk_videos": chunk_videos,
    }
    check_folder(out, meta)
    chunks = [videos[i : i + chunk_videos] for i in range(0, len(videos), chunk_videos)]
    todo = [k for k in range(len(chunks)) if not _chunk_path(out, k).exists()]
    done = len(videos) - sum(len(chunks[k]) for k in todo)
    with tqdm(total=len(videos), initial=done, desc="features", unit="video") as bar:
        for k in todo:
            record = extract_chunk(chunks[k], extractor)
            write_atomically(_chunk_path(out, k), lambda p, r=record: np.savez(p, **r))
            bar.update(len(chunks[k]))
    return merge_chunks(out, len(chunks), meta, class_names)


def merge_chunks(
    out: pathlib.Path, num_chunks: int, meta: dict[str, Any], class_names: Sequence[str]
) -> dict[str, Any]:
    """Joins the chunks into one ``features_{name}.npz`` per layer (and pixels); returns the counts."""
    records = []
    for k in range(num_chunks):
        with np.load(_chunk_path(out, k)) as saved:
            records.append(dict(saved))
    joined = {name: np.concatenate([r[name] for r in records]) for name in records[0]}
    names = [layer_name(layer) for layer in meta["spec"]["layers"]] + (
        [PIXELS] if meta["spec"]["pixels"] else []
    )
    written = []
    for name in names:
        if name not in joined:
            raise ValueError(
                f"none of the {meta['data_identity']['videos']} videos could be read: nothing to write"
            )
        fields = {
            "features": joined[name],
            "video_ids": joined["video_ids"],
            "labels": joined["labels"],
            "class_names": np.asarray(list(class_names), dtype=str),
            "meta": np.asarray(json.dumps({**meta, "features": name})),
        }
        path = out / output_file(name)
        write_atomically(path, lambda p, f=fields: np.savez(p, **f))
        written.append(str(path))
    return {
        "videos": int(len(joined["video_ids"])),
        "unreadable": joined["unreadable"].tolist(),
        "short": int(len(joined["short"])),
        "feature_shape": list(joined[names[0]].shape[1:]),
        "written": written,
    }


# --- timing ---------------------------------------------------------------------------------------


def extraction_speed(
    config: ml_collections.ConfigDict,
    layers: Sequence[int],
    num_frames: int = 16,
    height: int = 240,
    width: int = 320,
    batch_per_device: int = 1,
    repeats: int = 3,
) -> dict[str, Any]:
    """Clips/s of feature extraction (tokenizer encode + clean stream + pooling) for a config with
    random weights, at ``num_frames`` frames of ``height × width``, over every local device.

    The config's latent size is set to the frame size over the tokenizer's downsampling.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    mesh = mesh_lib.make_mesh(config.mesh)
    tokenizer = ClipTokenizer.from_config(config, mesh)
    f = tokenizer.cfg.downsample_factor
    config.data.update(latent_height=height // f, latent_width=width // f, num_frames=num_frames)
    spec = FeatureSpec(tuple(layers), num_frames=num_frames)
    extractor = Extractor(
        config, random_model_params(config, mesh, 0), tokenizer, mesh, spec, batch_per_device
    )
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (extractor.batch_size, num_frames, height, width, 3), dtype=np.uint8)
    start = time.perf_counter()
    extractor(clips)  # compiles
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        features = extractor(clips)
    seconds = (time.perf_counter() - start) / repeats
    return {
        "clips_per_s": round(extractor.batch_size / seconds, 3),
        "batch": extractor.batch_size,
        "compile_s": round(compile_s, 1),
        "finite": bool(all(np.isfinite(v).all() for v in features.values())),
    }
