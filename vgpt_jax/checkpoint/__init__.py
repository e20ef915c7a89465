"""Checkpoints: one wrapper over Orbax's CheckpointManager."""
