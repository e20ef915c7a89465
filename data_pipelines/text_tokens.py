"""Text -> Phi-3 token ids for a text condition (DESIGN §8), padded to the prefix's static length.

The ids are those of the release folder's ``tokenizer.json`` (read with the ``tokenizers``
package, offline), as the file's own pipeline gives them (its normaliser, pre-tokeniser and
post-processor, so any special tokens it adds count towards the length). ``config.condition
.text_tokenizer`` names the folder; pads are -1, which the model masks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from vgpt_jax.convert.official import TOKENIZER_JSON

if TYPE_CHECKING:
    import tokenizers


def load_text_tokenizer(folder: str) -> tokenizers.Tokenizer:
    """The tokenizer of ``folder``'s tokenizer.json; FileNotFoundError saying which field names it."""
    path = os.path.join(folder, TOKENIZER_JSON)
    if not folder or not os.path.isfile(path):
        raise FileNotFoundError(
            f"no {TOKENIZER_JSON} in {folder or '(config.condition.text_tokenizer is empty)'}: set "
            "config.condition.text_tokenizer to the release folder that holds the tokenizer files"
        )
    import tokenizers  # only text conditions need it: sampling and training without text never load it

    return tokenizers.Tokenizer.from_file(path)


def text_ids(tokenizer: tokenizers.Tokenizer, text: str, length: int, vocab_size: int) -> np.ndarray:
    """``text`` -> (length,) int32: its token ids, then -1 pads.

    ValueError naming the limit when it has more than ``length`` tokens (a cut text would
    condition on another one), and naming the id when one is outside the model's table.
    """
    ids = tokenizer.encode(text).ids
    if len(ids) > length:
        raise ValueError(
            f"the text {text!r} is {len(ids)} tokens, more than condition.max_text_tokens = {length}: "
            "shorten it"
        )
    if any(i >= vocab_size for i in ids):
        raise ValueError(
            f"the tokenizer gives id {max(ids)} for {text!r}, past the model's {vocab_size} rows"
        )
    return np.asarray(ids + [-1] * (length - len(ids)), np.int32)
