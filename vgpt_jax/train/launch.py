"""``vgpt train``: a config and a workdir -> mesh, data pipeline, frozen tokenizer, training loop.

Every process of a multi-host job runs the same command; each reads its own shard of the data.
The data source is ``config.data.source_path``: a video folder or index, ArrayRecord clips of
pixels, a prepared TFDS dataset, or ArrayRecord latents written by
``data_pipelines.encode_latents`` (then the tokenizer is only used to decode sample videos).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import ml_collections

from data_pipelines.clip_sampler import ClipSpec
from data_pipelines.pipeline import make_pipeline, open_source
from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.tokenizer import tokenizer_from_weights
from vgpt_jax.models.clip_tokenizer import write_weight_fields
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train import loop
from vgpt_jax.train.inputs import TrainInputs
from vgpt_jax.train.samples import SampleVideos
from vgpt_jax.train.step import TrainState


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print) -> TrainState:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint); returns the final state."""
    config_lib.validate(config)
    d = config.data
    if not d.source_path:
        raise ValueError(
            "config.data.source_path is empty: pass --config.data.source_path=DIR (videos, an index "
            ".txt, ArrayRecord clips or latents, or a TFDS dataset folder)"
        )
    if not os.path.exists(d.source_path):
        raise FileNotFoundError(f"config.data.source_path={d.source_path} does not exist")
    mesh = make_mesh(config.mesh)
    tokenizer = tokenizer_from_weights(config, mesh)
    # checkpoints then carry the tokenizer's own sizes and scaling, which inference reads
    write_weight_fields(tokenizer.cfg, config)
    spec = ClipSpec.from_config(d, downsample=tokenizer.cfg.downsample_factor, min_side=d.min_side)
    pipeline = make_pipeline(
        config,
        mesh,
        open_source(d.source_path, d.split),
        worker_count=d.worker_count,
        worker_buffer_size=d.worker_buffer_size,
        spec=spec,
    )
    inputs = TrainInputs(config, tokenizer)
    samples = SampleVideos(config, tokenizer, workdir)

    def prepare(batch, step):
        prepared = inputs(batch, step)
        samples.remember(prepared)
        return prepared

    return loop.train(
        config,
        workdir,
        pipeline,
        data_iterator=pipeline,
        mesh=mesh,
        log=log,
        prepare=prepare,
        on_step=samples,
    )
