"""Names of the attention values a remat policy saves to keep the attention forward out of the
backward: q, k, v after RoPE and the output (``attention``); the output and log-sum-exp inside a
kernel's VJP (``block_sparse_attention``). Shared here so the backends need not import the module
that dispatches to them."""

ATTENTION_QKV, ATTENTION_OUT, ATTENTION_LSE = "attention_qkv", "attention_out", "attention_lse"
ATTENTION_RESIDUALS = (ATTENTION_QKV, ATTENTION_OUT, ATTENTION_LSE)
