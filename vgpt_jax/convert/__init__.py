"""Converters between released PyTorch weights (safetensors, diffusers/OmniGen names) and our parameters."""
