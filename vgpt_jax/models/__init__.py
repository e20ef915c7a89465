"""Models: the Video-GPT backbone with its embedders and heads, and the sequence layout."""
