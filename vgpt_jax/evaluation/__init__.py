"""Evaluation: Physics-IQ (masks, the four metrics, the score) and video metrics."""
