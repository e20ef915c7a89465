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
from vgpt_jax.checkpoint.tokenizer import tokenizer_from_weights
from vgpt_jax.evaluation.frame_prediction import TrainingEvaluation
from vgpt_jax.models.clip_tokenizer import TokenizerConfig, with_weight_fields
from vgpt_jax.parallel.mesh import make_mesh
from vgpt_jax.train import loop, preflight
from vgpt_jax.train.inputs import TrainInputs
from vgpt_jax.train.samples import SampleVideos
from vgpt_jax.train.step import TrainState


def run(config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print) -> TrainState:
    """Trains ``config`` (validated) in ``workdir``, resuming from its latest checkpoint; returns the
    final state. With ``train.eval_every``, the frame-prediction evaluation of ``config.evaluation``
    is logged at those steps (``eval/*``), the copy-last-frame baseline's at step 0."""
    d = config.data
    # user errors in the workdir or the data surface here, before the mesh and any compilation
    preflight.check_workdir(workdir)
    source = preflight.open_training_source(
        config, preflight.clip_spec(config, TokenizerConfig.from_config(config).downsample_factor)
    )
    mesh = make_mesh(config.mesh)
    tokenizer = tokenizer_from_weights(config, mesh)
    # checkpoints then carry the tokenizer's own sizes and scaling, which inference reads
    config = with_weight_fields(config, tokenizer.cfg)
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
    evaluation = TrainingEvaluation(config, tokenizer, mesh) if config.train.eval_every else None

    def prepare(batch, step):
        prepared = inputs(batch, step)
        samples.remember(prepared)
        return prepared

    def after_step(step: int, state: TrainState) -> dict[str, float] | None:
        samples(step, state)
        return evaluation(step, state) if evaluation is not None else None

    try:
        return loop.train(
            config,
            workdir,
            pipeline,
            data_iterator=pipeline,
            mesh=mesh,
            log=log,
            prepare=prepare,
            on_step=after_step,
            # the copy-last-frame baseline's scores, once, for the model's to be read against
            initial_scalars=evaluation.baseline_scalars() if evaluation is not None else None,
        )
    finally:  # the counts live in the iterator's state: a resumed run's include the earlier runs'
        log(
            f"data: {pipeline.counts[SKIPPED]} unreadable videos skipped and {pipeline.counts[REJECTED]} "
            "refused by the rules on this host since the run began"
        )
