"""Meshes, logical axis rules and sharding helpers."""
