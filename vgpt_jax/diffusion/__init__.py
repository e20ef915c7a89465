"""Flow matching: noise, per-clip times, the x1 loss, the Euler grid and CFG."""
