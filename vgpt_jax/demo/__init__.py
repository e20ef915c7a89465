"""``make demo``: the whole method on a synthetic physics world (``run.run(config, workdir)``).

The world lives here too, as only the demo and the tests use it: ``physics_sim`` (balls under
gravity), ``physics_render`` (cameras and drawing), ``physics_scenes`` (random scenes and their
second takes, and the motion world's scenes) and ``synthetic_physics`` (the training videos and a
benchmark in the Physics-IQ layout); ``probe`` and ``classes`` (the linear probe and class-to-video
on a labelled world) and ``motion_judge`` (the motion world's judge without a model).
"""
