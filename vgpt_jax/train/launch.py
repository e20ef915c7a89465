"""``vgpt train``: a config and a workdir -> mesh, data pipeline, frozen tokenizer, training loop.

Every process of a multi-host job runs the same command; each reads its own shard of the data.
The data source is ``config.data.source_path``: a video folder, file or index, ArrayRecord clips of
pixels, a prepared TFDS dataset, or ArrayRecord latents written by
``data_pipelines.encode_latents`` (then the tokenizer is only used to decode sample videos).
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from data_pipelines.clip_sampler import REJECTED, SKIPPED
from data_pipelines.pipeline import make_pipeline
from vgpt_jax import config as config_lib
from vgpt_jax.checkpoint.tokenizer import tokenizer_from_weights
from vgpt_jax.models.clip_tokenizer import TokenizerConfig, write_weight_fields
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train import loop, preflight
from vgpt_jax.train.inputs import TrainInputs
from vgpt_jax.train.samples import SampleVideos
from vgpt_jax.train.step import TrainState


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print) -> TrainState:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint); returns the final state."""
    config_lib.validate(config)
    d = config.data
    # user errors in the workdir or the data surface here, before the mesh and any compilation
    preflight.check_workdir(workdir)
    source = preflight.open_training_source(
        config, preflight.clip_spec(config, TokenizerConfig.from_config(config).downsample_factor)
    )
    mesh = make_mesh(config.mesh)
    tokenizer = tokenizer_from_weights(config, mesh)
    # checkpoints then carry the tokenizer's own sizes and scaling, which inference reads
    write_weight_fields(tokenizer.cfg, config)
    pipeline = make_pipeline(
        config,
        mesh,
        source,
        worker_count=d.worker_count,
        worker_buffer_size=d.worker_buffer_size,
        spec=preflight.clip_spec(config, tokenizer.cfg.downsample_factor),
    )
    inputs = TrainInputs(config, tokenizer)
    samples = SampleVideos(config, tokenizer, workdir)

    def prepare(batch, step):
        prepared = inputs(batch, step)
        samples.remember(prepared)
        return prepared

    try:
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
    finally:  # the counts live in the iterator's state: a resumed run's include the earlier runs'
        log(
            f"data: {pipeline.counts[SKIPPED]} unreadable videos skipped and {pipeline.counts[REJECTED]} "
            "refused by the rules on this host since the run began"
        )
