"""Neural-network building blocks: attention (mask rule + backends), RoPE, norms, embeddings, MLP."""
