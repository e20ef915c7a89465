"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

from vgpt_jax import config as config_lib  # noqa: E402

# XLA:CPU compiles threefry slowly (~0.2 s a draw); identical programs recur across tests and
# across the xdist workers, so share compiled executables through the persistent cache.
jax.config.update("jax_compilation_cache_dir", os.environ.get("VGPT_TEST_CACHE", "/tmp/vgpt_jax_test_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_experiment(name: str):
    """get_config() of experiments/<name>.py, through the one experiment loader."""
    return config_lib.load_experiment(str(REPO / "experiments" / f"{name}.py"))


def perturbed(params, scale: float = 0.05, seed: int = 1):
    """Adds noise to every parameter so zero-initialised heads produce non-trivial outputs."""

    @jax.jit
    def add_noise(tree):
        leaves, treedef = jax.tree.flatten(tree)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        pairs = zip(leaves, keys, strict=True)
        noisy = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in pairs]
        return treedef.unflatten(noisy)

    return add_noise(params)


# ids 0-3 are tiny_cpu's pad and marker tokens; its table has 8 rows
WORDS = {"[UNK]": 0, "a": 4, "ball": 5, "drops": 6, "rolls": 7}


def write_text_tokenizer(folder: pathlib.Path) -> pathlib.Path:
    """A word-level tokenizer.json, in the release folder's file format, of WORDS, in ``folder``."""
    import tokenizers  # only the text-condition tests need it

    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(WORDS, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture
def tiny_config():
    return load_experiment("tiny_cpu")
