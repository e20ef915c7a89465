"""Physics-IQ evaluation: `vgpt physics-iq score` computes the benchmark's score for a folder of videos;
`generate` writes a checkpoint's videos for the test cases, and `run` does both.

The numbers equal the official evaluation's (google-deepmind/physics-IQ-benchmark, spec in
PHYSICS_IQ_SPEC.md) for the same videos, with three differences in behaviour only: inputs are never
renamed or written to, every cached mask is keyed by the content it was computed from, and any
subset of the 198 test cases can be scored (the outputs say which, and whether the set is complete).

    vgpt physics-iq score --data-dir physics-IQ-benchmark --generated-dir G --output-dir O

writes O/scores.json, O/per_video.csv (the official results CSV: one row per scenario, columns per
view) and O/physics_iq.png; masks computed here are kept in O/mask_cache.

    vgpt physics-iq generate --checkpoint C --data-dir physics-IQ-benchmark --fps 8 --output-dir G
    vgpt physics-iq run --checkpoint C --data-dir physics-IQ-benchmark --fps 8 --output-dir O

(see generate.py; `run` writes the videos to O/generated unless --generated-dir is given).

The benchmark's descriptions.csv is read from --descriptions FILE, by default from
DATA_DIR/descriptions/descriptions.csv, else from descriptions/descriptions.csv beside the data
folder (the benchmark repository's layout, where its download script puts physics-IQ-benchmark/).

Modules: ``video`` (OpenCV reading), ``layout`` (the benchmark's folders and a run's checked
inputs), ``masks``, ``metrics``, ``aggregate`` (the score from per-view metrics), ``report``,
``score`` (a folder of videos scored), ``generate`` (a checkpoint's videos); the command's flags
are in ``vgpt_jax/cli/physics_iq.py``.
"""
