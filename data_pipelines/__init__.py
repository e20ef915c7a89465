"""Grain data pipelines and sources, and offline data jobs."""
