"""Measurement scaffolding, apart from the library: ``bench`` (train-step, sampler, tokenizer and
pipeline timings, ``vgpt bench``), ``profile`` (a trace's device time by kernel kind),
``throughput`` (decoded clips per second), ``block_sparse_check`` (the GPU kernels' correctness
and tile sweep) and ``release_folder`` (a random-weight official folder to time ``vgpt convert``)."""
