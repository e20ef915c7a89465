"""Config schema: defaults shared by every experiment, derived sizes, and validation.

Experiments (``experiments/*.py``) are pure data: they start from :func:`base_config` and set
fields. Library code reads fields; it never branches on an experiment's name. :func:`validate`
runs once, before anything is built, and names the field, the value and what is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

# Phi-3 (OmniGen-v1 / Video-GPT) LongRoPE factors as stored (float32 values written as float64).
PHI3_LONG_FACTOR = (
    1.0299999713897705, 1.0499999523162842, 1.0499999523162842, 1.0799999237060547,
    1.2299998998641968, 1.2299998998641968, 1.2999999523162842, 1.4499999284744263,
    1.5999999046325684, 1.6499998569488525, 1.8999998569488525, 2.859999895095825,
    3.68999981880188, 5.419999599456787, 5.489999771118164, 5.489999771118164,
    9.09000015258789, 11.579999923706055, 15.65999984741211, 15.769999504089355,
    15.789999961853027, 18.360000610351562, 21.989999771118164, 23.079999923706055,
    30.009998321533203, 32.35000228881836, 32.590003967285156, 35.56000518798828,
    39.95000457763672, 53.840003967285156, 56.20000457763672, 57.95000457763672,
    59.29000473022461, 59.77000427246094, 59.920005798339844, 61.190006256103516,
    61.96000671386719, 62.50000762939453, 63.3700065612793, 63.48000717163086,
    63.48000717163086, 63.66000747680664, 63.850006103515625, 64.08000946044922,
    64.760009765625, 64.80001068115234, 64.81001281738281, 64.81001281738281,
)  # fmt: skip
PHI3_SHORT_FACTOR = (
    (1.05,) * 3 + (1.1,) * 3 + (1.2500000000000002,) * 2
    + (1.4000000000000004, 1.4500000000000004, 1.5500000000000005, 1.8500000000000008, 1.9000000000000008)
    + (2.000000000000001,) * 19 + (2.1000000000000005,) * 2 + (2.2,) + (2.3499999999999996,) * 4
    + (2.3999999999999995,) * 2
    + (2.6499999999999986, 2.6999999999999984, 2.8999999999999977, 2.9499999999999975)
    + (3.049999999999997,) * 3
)  # fmt: skip

ATTENTION_BACKENDS = ("auto", "xla", "block_sparse", "splash")
KERNEL_CHOICES = ("auto", "triton", "hopper")  # the block-sparse forward, dQ and dK/dV kernels
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "attention", "attention_out", "attention_offload")
ROPE_FACTOR_CHOICES = ("long", "short", "none")
PARTITIONS = ("random", "per_frame", "fixed")
MESH_AXES = ("data", "fsdp", "tensor", "sequence")
# The projections a LoRA adapter may wrap: the fused ``qkv`` (Phi-3 qkv_proj) and ``out`` (o_proj)
# kernels of every layer's attention, the release's two targets.
LORA_TARGETS = ("qkv", "out")
CONDITION_KINDS = ("none", "class", "text")


def base_config() -> ml_collections.ConfigDict:
    """Every field an experiment may set, with the release (3.76 B, stage-2) defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    m = c.model = ml_collections.ConfigDict()
    m.hidden_size = 3072
    m.num_layers = 32
    m.num_heads = 32
    m.num_kv_heads = 32
    m.mlp_dim = 8192
    m.vocab_size = 32064
    m.rms_norm_eps = 1e-5
    m.final_norm_eps = 1e-6
    m.latent_channels = 4
    m.patch_size = 2
    m.pos_embed_max_size = 192  # side of the fixed 2-D sin-cos grid
    m.pos_embed_base_size = 64  # grid coordinates are index / (max_size / base_size)
    m.time_embed_dim = 256
    m.dtype = "bfloat16"  # compute dtype; norms, softmax statistics and the loss stay fp32
    m.param_dtype = "float32"
    m.remat_policy = "full"
    m.scan_layers = True
    # each layer's four projections (qkv, out, gate_up, down) as float8 e4m3 matmuls with per-tensor
    # scales, for sampling on GPUs with fp8 tensor cores; training refuses it (no scaled gradients)
    m.fp8_projections = False
    m.rope = ml_collections.ConfigDict()
    m.rope.theta = 10000.0
    m.rope.factors = "long"  # the official attention always passes seq_len=5000 > 4096 (spec 3.1)
    m.rope.long_factor = PHI3_LONG_FACTOR
    m.rope.short_factor = PHI3_SHORT_FACTOR
    m.rope.original_max_position_embeddings = 4096
    m.rope.max_position_embeddings = 131072
    m.attention = ml_collections.ConfigDict()
    # auto: block_sparse (Pallas, skips masked tiles) on a GPU, splash on a TPU, xla elsewhere
    m.attention.backend = "auto"
    # The xla backend holds (batch, heads, query_chunk, keys) fp32 scores at a time: 512 keeps the
    # release model's 2-row CFG sampler at 80 frames under 3 GB.
    m.attention.query_chunk = 512
    # Tiles and Triton launch parameters of the block-sparse kernels (forward, dK/dV, dQ): powers of
    # two >= 16; the README's "Attention kernels" says where these were the fastest.
    m.attention.block_sparse = ml_collections.ConfigDict()
    for kernel in ("fwd", "dkv", "dq"):
        m.attention.block_sparse[kernel] = ml_collections.ConfigDict(
            {"block_q": 64, "block_k": 64, "num_warps": 4, "num_stages": 3}
        )
    # The forward kernel: "triton" (the fwd tiles above), "hopper" (block_sparse_hopper: Mosaic GPU,
    # warpgroup MMA and TMA; sm90 only) or "auto" (hopper on a Hopper GPU in bf16/fp16).
    m.attention.block_sparse.forward_kernel = "auto"
    # The dQ and dK/dV kernels, the same choices: block_sparse_hopper.dq streams dq.block_k keys a tile
    # past 128-row query blocks, block_sparse_hopper.dkv dkv.block_q queries past 128-key blocks,
    # num_stages tiles in flight (both checked against the fp32 reference on an H200 at head dims
    # 128 and 96; README, "A Hopper forward kernel").
    m.attention.block_sparse.dq_kernel = "auto"
    m.attention.block_sparse.dkv_kernel = "auto"
    m.attention.block_sparse.hopper = ml_collections.ConfigDict({"block_k": 128, "stages": 2})
    # Splash tiles (multiples of 128; shrunk to a shorter sequence). Large tiles suit long sequences:
    # its grid also steps over the tiles it skips.
    m.attention.splash = ml_collections.ConfigDict({"block_q": 512, "block_kv": 512})
    # Ids in the Phi-3 table of the three marker tokens and the pad token. The release's ids come
    # from its tokenizer files (the converter reads them); these are placeholders for training.
    m.tokens = ml_collections.ConfigDict()
    m.tokens.diffusion = 32011
    m.tokens.image_start = 32012
    m.tokens.image_end = 32013
    m.tokens.pad = 32000

    d = c.data = ml_collections.ConfigDict()
    d.num_frames = 48
    d.latent_height = 22  # 176 px / 8
    d.latent_width = 40  # 320 px / 8
    d.per_device_batch_size = 1
    d.frame_interval = 4  # stages 1-2; stages 3-4 draw it per video
    d.flexible_interval = False
    d.max_interval = 12
    d.max_image_size = 320
    # where the training clips come from (see vgpt_jax/train/launch.py); split for TFDS datasets
    d.source_path = ""
    d.split = "train"
    # With condition.kind "class", source_path is a labelled source (data_pipelines/labelled_source):
    # a JSONL manifest, or a folder of class sub-folders (UCF-101/), then read through split_file
    # if set (UCF-101's trainlist0N.txt). class_index (a classInd.txt) numbers the classes; empty:
    # the one beside split_file or in the folder, else the sorted sub-folder names. With "text",
    # source_path is a JSONL manifest with a "text" for every video.
    d.class_index = ""
    d.split_file = ""
    d.min_side = 128  # videos with a shorter side are rejected (the official filter)
    d.worker_count = 0  # Grain decode processes per host; 0 decodes in the main process
    d.worker_buffer_size = 2

    lay = c.layout = ml_collections.ConfigDict()
    # random: the official K ~ U{2..N} partition per sample; per_frame: one clip per frame (stage 1);
    # fixed: every sample uses fixed_partition (frames per clip; benchmarks and ablations)
    lay.partition = "random"
    lay.fixed_partition = ()
    lay.clean_noise_min = 0.9  # clean inputs are s*x + (1-s)*eps, s ~ U(clean_noise_min, 1)
    # weight of the first clip's frames in the x1 loss. 1 is the official loss; the first clip has
    # no clean history, so its frames train generation from nothing, which a model that is always
    # given conditioning frames (video prediction) may skip with 0
    lay.first_clip_loss_weight = 1.0

    o = c.optim = ml_collections.ConfigDict()
    o.learning_rate = 1e-4
    o.warmup_steps = 320_000
    o.b1 = 0.9
    o.b2 = 0.95
    o.eps = 1e-5
    o.weight_decay = 0.1
    o.grad_clip_norm = 1.0
    o.decay_steps = 0  # after the warm-up: 0 = constant (official); else a cosine to 0 over these steps

    t = c.train = ml_collections.ConfigDict()
    t.steps = 1000
    t.log_every = 10
    t.checkpoint_every = 1000
    t.keep_checkpoints = 3
    t.data_timeout_s = 600.0  # a data pipeline silent this long stops the run
    t.peak_tflops = 0.0  # per-device peak for MFU; 0 = measure a matmul at start
    t.sample_every = 0  # steps between sample videos in workdir/samples (0: none)
    t.sample_fps = 8
    t.eval_every = 0  # steps between frame-prediction evaluations on config.evaluation (0: none)
    # a profiler trace (TensorBoard's profile plugin, Perfetto) of profile_steps steps from
    # profile_start (after the first step's compilation) into workdir/profile; 0 steps: none
    t.profile_start = 3
    t.profile_steps = 0
    # a params checkpoint (`vgpt convert` / `vgpt export`) whose "model" params start a new run
    t.init_from = ""
    # Decoder layers per iteration of the training step's layer scan (model.scan_layers; lax.scan's
    # unroll); >= model.num_layers runs them as one straight program, parameters still stacked. A
    # loop keeps every layer's residuals in stacked buffers that XLA zero-fills and copies at the
    # loop's boundary (README, "Unrolled layers"); unrolled, XLA compiles the layers one by one.
    # Sampling and feature extraction always loop.
    t.scan_unroll = 1

    # Frame prediction on held-out videos (vgpt_jax.evaluation.frame_prediction), run every
    # train.eval_every steps: PSNR, SSIM and FVD of the model's predictions, beside those of a
    # copy-last-frame baseline. The defaults are the Kinetics-600 protocol's 5 -> 11 frames.
    ev = c.evaluation = ml_collections.ConfigDict()
    ev.videos = ""  # a folder of held-out videos (searched recursively)
    ev.num_videos = 16  # the first ones by sorted path; FVD of fewer than 401 is biased (reported)
    ev.cond_frames = 5
    ev.pred_frames = 11
    ev.stride = 1  # every stride-th frame of the videos
    ev.fvd_frames = "all"  # FVD over the conditioning + predicted frames ("all") or "pred" only
    ev.fvd = True  # False: PSNR and SSIM only (FVD runs I3D at 224x224 on every clip)

    # LoRA (the release's stage-3/4 fine-tuning: rank 8, alpha = rank, Gaussian A, zero B, on qkv and
    # out of every layer). rank 0 trains every parameter; rank > 0 trains only the adapters (and
    # keeps the rest frozen, without optimiser state), y = x W + (alpha / rank) (x A) B.
    lo = c.lora = ml_collections.ConfigDict()
    lo.rank = 0
    lo.alpha = 0.0  # 0 = equal to the rank (a scale of 1), as the release
    lo.targets = LORA_TARGETS

    # A condition prefix before the frames (DESIGN §8; our design, the release publishes none):
    # "class", one token from a learned (num_classes + 1, D) table whose last row is the null
    # class; "text", Phi-3 token ids padded to max_text_tokens (pads masked, a null text is all
    # pad). Training replaces a condition by the null one with probability ``dropout``, which
    # sampling's condition guidance (sampling.condition_scale) needs.
    co = c.condition = ml_collections.ConfigDict()
    co.kind = "none"
    co.num_classes = 0
    co.max_text_tokens = 64
    co.text_tokenizer = ""  # a folder with the release's tokenizer.json: how text becomes ids
    co.dropout = 0.1

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = -1  # -1: all devices left over
    c.mesh.tensor = 1
    c.mesh.sequence = 1
    # (logical axis, mesh axis or axes or None) for Video-GPT's parameters and activations: every
    # parameter and constrained activation carries logical names, so a config changes only the mesh
    # sizes to move between 1 CPU, 8 devices, a GPU host or a pod. A name not listed is replicated.
    c.mesh.logical_axis_rules = (
        # parameters
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("vocab", "tensor"),
        ("layers", None),
        ("qkv", None),
        ("gate_up", None),
        ("head_dim", None),
        ("norm", None),
        ("patch_row", None),
        ("patch_col", None),
        ("channels", None),
        ("time_freq", None),
        ("patch_out", None),
        ("lora_rank", None),  # LoRA factors: small, so only their other axis is sharded
        ("classes", None),  # the condition's class table: a few hundred rows at most
        # activations
        ("activation_batch", ("data", "fsdp")),
        ("activation_length", "sequence"),
        ("activation_embed", None),
        ("activation_heads", "tensor"),
        ("activation_mlp", "tensor"),
    )

    s = c.sampling = ml_collections.ConfigDict()
    s.steps = 50
    s.cfg_scale = 1.5  # w_hist: guidance by the history
    # w_cond: guidance by the condition (config.condition), x = x_none + w_hist (x_hist − x_none)
    # + w_cond (x_full − x_hist); 1 = no condition guidance. OmniGen's default text guidance.
    s.condition_scale = 3.0
    s.shift = 1.0
    s.clip_frames = 24
    s.window_frames = 80
    s.history_noise = 0.0
    s.use_kv_cache = True
    s.seed = 42

    # The clip tokenizer (spec §2): the SDXL VAE's sizes, applied per frame.
    tk = c.tokenizer = ml_collections.ConfigDict()
    # '' = random init from config.seed; else a params checkpoint written by tokenizer training or a
    # diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors)
    tk.weights = ""
    tk.in_channels = 3
    tk.block_out_channels = (128, 256, 512, 512)
    tk.layers_per_block = 2
    tk.latent_channels = 4
    tk.norm_num_groups = 32
    tk.norm_eps = 1e-6
    tk.scaling_factor = 0.13025
    tk.dtype = "float32"  # the release runs the VAE in fp32
    # XLA's dot/conv precision; "default" on a GPU is TF32, as PyTorch's cuDNN convolutions are.
    tk.precision = "default"
    tk.chunk_frames = 8  # frames per device per encode/decode step: bounds activation memory
    # The tokenizer's parameters are small (84 M for the SDXL size) and its convolutions have no
    # dimension that divides every mesh, so its logical axes are replicated: the work is split over
    # frames instead.
    tk.logical_axis_rules = (
        ("conv_height", None),
        ("conv_width", None),
        ("conv_in", None),
        ("conv_out", None),
    )
    to = tk.optim = ml_collections.ConfigDict()  # read by train.step.make_optimizer
    to.learning_rate = 1e-4
    to.warmup_steps = 1000
    to.b1 = 0.9
    to.b2 = 0.999
    to.eps = 1e-8
    to.weight_decay = 0.01
    to.grad_clip_norm = 1.0
    to.decay_steps = 0
    tt = tk.train = ml_collections.ConfigDict()
    tt.steps = 100_000
    tt.batch_size = 32  # global frames per step
    tt.l1_weight = 1.0
    tt.l2_weight = 1.0
    tt.kl_weight = 1e-6  # on the KL per latent element, averaged over frames
    tt.log_every = 100
    tt.checkpoint_every = 1000
    tt.keep_checkpoints = 2
    tt.profile_start = 3
    tt.profile_steps = 0
    tt.frame_size = 256  # training frames are brought to this square bucket
    # each training sample is frames_per_sample frames, frame_interval apart, from a random place in a
    # random video (one decode serves several frames of a batch)
    tt.frames_per_sample = 4
    tt.frame_interval = 4
    tt.eval_videos = 8  # the last videos of the dataset are held out for the PSNR
    tt.frames_per_video = 16  # evenly spaced frames of each held-out video
    tt.eval_every = 0  # steps between held-out PSNR evaluations (0: at the end only)
    # after training, set scaling_factor to 1 / std of the held-out latents (as Stable Diffusion chose
    # its VAE's), so the diffusion model sees unit-variance latents; False keeps the configured one
    tt.fit_scaling_factor = False
    return c


def local_variant(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of an experiment at a size that runs in seconds on a CPU: same recipe, tiny model.

    The model, data sizes, tokenizer and mesh become ``experiments/tiny_cpu.py``'s (a text-conditioned
    experiment keeps its token table's rows, which its tokenizer's ids index); everything else
    (partition rule, intervals, optimiser, schedule) stays the experiment's, so a change to an
    experiment can be tried end to end on a laptop before it goes to a pod.
    """
    c = ml_collections.ConfigDict(config.to_dict())
    m = c.model
    # a text condition reads its ids through the token table: keep every row the tokenizer can
    # give (the release's 32,064 x 64 is 2 M parameters); otherwise the 8 rows of the markers
    vocab_size = m.vocab_size if c.condition.kind == "text" else 8
    m.update(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4, mlp_dim=128, vocab_size=vocab_size)
    m.update(pos_embed_max_size=16, pos_embed_base_size=8, dtype="float32", remat_policy="none")
    m.tokens.update(pad=0, diffusion=1, image_start=2, image_end=3)
    m.rope.factors = "none"  # LongRoPE's factors belong to the 96-wide heads of the release
    c.data.update(num_frames=8, latent_height=8, latent_width=8, per_device_batch_size=1)
    c.mesh.update(data=-1, fsdp=1, tensor=1, sequence=1)
    c.sampling.update(steps=10, clip_frames=4, window_frames=8)
    # 8x downsampling to the 8x8x4 latent of 64x64 frames
    c.tokenizer.update(block_out_channels=(8, 16, 32, 64), layers_per_block=1, norm_num_groups=2)
    c.tokenizer.chunk_frames = 32
    return c


VARIANTS = {"": lambda c: c, "runlocal": local_variant}


def with_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """``config`` as the experiment argument ``variant`` asks (``FILE.py:runlocal``); '' = as is."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown experiment argument {variant!r}: one of {sorted(VARIANTS)}")
    return VARIANTS[variant](config)


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
    """A saved config (e.g. a checkpoint's JSON) with every field it predates set to its default.

    Saved values win; fields only the saved config has are kept. So a checkpoint written before
    a field existed still loads, and means what it meant (defaults are the official behaviour).
    """

    def merge(defaults: dict, values: dict) -> dict:
        out = dict(defaults)
        for key, value in values.items():
            both_dicts = isinstance(value, dict) and isinstance(defaults.get(key), dict)
            out[key] = merge(defaults[key], value) if both_dicts else value
        return out

    return ml_collections.ConfigDict(merge(base_config().to_dict(), saved))


# experiments/ beside the package (a source checkout): bare names like "tiny_cpu" resolve there
EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def experiment_file(name: str) -> str:
    """An experiment's file: ``name`` as a path, else ``EXPERIMENTS_DIR/name.py`` for a bare name."""
    if os.path.isfile(name):
        return name
    candidate = os.path.join(EXPERIMENTS_DIR, name if name.endswith(".py") else f"{name}.py")
    if os.sep not in name and os.path.isfile(candidate):
        return candidate
    raise FileNotFoundError(f"no experiment file {name!r} (give a path like experiments/tiny_cpu.py)")


def load_experiment(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config of ``spec`` = ``FILE[:ARG]`` (big_vision style: ``get_config(ARG)``) with overrides.

    ``overrides`` are ``FIELD=VALUE`` strings (see :func:`apply_overrides`). The experiment's own
    config is never shared: the result is a fresh, unlocked ConfigDict.
    """
    path, sep, arg = spec.partition(":")
    path = experiment_file(path)
    module_name = "experiment_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} defines no get_config(): an experiment file returns its config from it")
    config = module.get_config(arg) if sep else module.get_config()
    return apply_overrides(config, overrides)


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf field of ``config`` as a dotted path, e.g. ``model.attention.backend``."""
    paths = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            paths.extend(field_paths(value, path + "."))
        else:
            paths.append(path)
    return paths


def _unknown_field(config: ml_collections.ConfigDict, field: str) -> ValueError:
    nearest = difflib.get_close_matches(field, field_paths(config), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(nearest)}?" if nearest else ""
    return ValueError(f"config has no field {field!r}{hint}")


def parse_value(text: str):
    """A command-line value: a Python literal (``3``, ``1e-4``, ``(3, 5)``, ``True``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _field_node(config: ml_collections.ConfigDict, field: str) -> tuple[ml_collections.ConfigDict, str]:
    """(the section holding ``field``, its name); an unknown field names the nearest valid ones."""
    *parents, name = field.split(".")
    node = config
    for parent in parents:
        node = node.get(parent) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise _unknown_field(config, field)
    if isinstance(node[name], ml_collections.ConfigDict):
        raise ValueError(f"config.{field} is a section: set one of its fields ({field}.NAME=VALUE)")
    return node, name


def with_fields(config: ml_collections.ConfigDict, fields: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``{dotted field: value}`` set; ``config`` itself is not changed.

    Values must have the field's type (an int for a float is fine; a list for a tuple is converted).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    for field, value in fields.items():
        node, name = _field_node(config, field)
        old = node[name]
        if isinstance(old, list | tuple) and isinstance(value, list | tuple):
            value = type(old)(value)  # a config read back from JSON holds lists where tuples were
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if old is not None and not isinstance(value, type(old)):
            raise ValueError(
                f"config.{field} = {value!r} is not allowed: a {type(old).__name__} value, like {old!r}"
            )
        node[name] = value
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with each command-line ``FIELD=VALUE`` applied (see :func:`with_fields`).

    Values are Python literals; a string field takes the text as it is (``name=1`` is ``'1'``).
    """
    fields = {}
    for item in overrides:
        field, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"config override {item!r} has no value: write FIELD=VALUE")
        node, name = _field_node(config, field)
        fields[field] = text if isinstance(node[name], str) else parse_value(text)
    return with_fields(config, fields)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Sizes derived from a config; the single place that does this arithmetic."""

    tokens_per_frame: int  # S: patch tokens of one frame
    block_len: int  # S + 2: a frame's block with its two marker tokens
    num_frames: int  # N
    seq_len: int  # our static training layout: N clean + N noisy blocks
    official_max_seq_len: int  # (2N - 1) * (S + 2): the longest official sequence
    patch_dim: int  # p * p * C
    head_dim: int


def sizes(config: ml_collections.ConfigDict) -> Sizes:
    m, d = config.model, config.data
    p = m.patch_size
    s = (d.latent_height // p) * (d.latent_width // p)
    n = d.num_frames
    return Sizes(
        tokens_per_frame=s,
        block_len=s + 2,
        num_frames=n,
        seq_len=2 * n * (s + 2),
        official_max_seq_len=(2 * n - 1) * (s + 2),
        patch_dim=p * p * m.latent_channels,
        head_dim=m.hidden_size // m.num_heads,
    )


def _require(ok: bool, field: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"config.{field} = {value!r} is not allowed: {allowed}")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every field the library reads; returns the config so calls can be chained."""
    m, d = config.model, config.data
    for field in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "mlp_dim", "vocab_size"):
        _require(getattr(m, field) > 0, f"model.{field}", getattr(m, field), "a positive integer")
    _require(
        m.hidden_size % m.num_heads == 0,
        "model.hidden_size",
        m.hidden_size,
        f"a multiple of model.num_heads = {m.num_heads}",
    )
    _require(
        m.num_kv_heads == m.num_heads,
        "model.num_kv_heads",
        m.num_kv_heads,
        f"model.num_heads = {m.num_heads}: grouped-query attention is not supported (the release has none)",
    )
    head_dim = m.hidden_size // m.num_heads
    _require(head_dim % 2 == 0, "model.hidden_size", m.hidden_size, "an even head dimension for RoPE")
    _require(
        m.rope.factors in ROPE_FACTOR_CHOICES,
        "model.rope.factors",
        m.rope.factors,
        f"one of {ROPE_FACTOR_CHOICES}",
    )
    for name in ("long_factor", "short_factor"):
        if m.rope.factors == name.split("_")[0]:
            n = len(getattr(m.rope, name))
            _require(
                n == head_dim // 2,
                f"model.rope.{name}",
                f"<{n} values>",
                f"head_dim / 2 = {head_dim // 2} values",
            )
    _require(
        m.attention.backend in ATTENTION_BACKENDS,
        "model.attention.backend",
        m.attention.backend,
        f"one of {ATTENTION_BACKENDS}",
    )
    _require(
        m.attention.query_chunk > 0,
        "model.attention.query_chunk",
        m.attention.query_chunk,
        "a positive integer",
    )
    _validate_attention_tiles(m.attention)
    _require(
        m.remat_policy in REMAT_POLICIES, "model.remat_policy", m.remat_policy, f"one of {REMAT_POLICIES}"
    )
    _require(isinstance(m.fp8_projections, bool), "model.fp8_projections", m.fp8_projections, "True or False")
    _require(
        m.dtype in ("float32", "bfloat16", "float16"), "model.dtype", m.dtype, "float32, bfloat16 or float16"
    )
    for tok in ("diffusion", "image_start", "image_end", "pad"):
        tid = getattr(m.tokens, tok)
        _require(0 <= tid < m.vocab_size, f"model.tokens.{tok}", tid, f"an id in [0, {m.vocab_size})")
    for side in ("latent_height", "latent_width"):
        v = getattr(d, side)
        _require(
            v > 0 and v % m.patch_size == 0,
            f"data.{side}",
            v,
            f"a positive multiple of model.patch_size = {m.patch_size}",
        )
        _require(
            v // m.patch_size <= m.pos_embed_max_size,
            f"data.{side}",
            v,
            f"at most model.pos_embed_max_size * patch_size = {m.pos_embed_max_size * m.patch_size}",
        )
    _require(d.num_frames >= 2, "data.num_frames", d.num_frames, "at least 2 (one clean clip, one noisy)")
    _require(d.per_device_batch_size >= 1, "data.per_device_batch_size", d.per_device_batch_size, ">= 1")
    _require(
        config.layout.partition in PARTITIONS,
        "layout.partition",
        config.layout.partition,
        f"one of {PARTITIONS}",
    )
    _require(
        0.0 <= config.layout.clean_noise_min <= 1.0,
        "layout.clean_noise_min",
        config.layout.clean_noise_min,
        "a value in [0, 1]",
    )
    _require(
        config.layout.first_clip_loss_weight >= 0.0,
        "layout.first_clip_loss_weight",
        config.layout.first_clip_loss_weight,
        ">= 0",
    )
    for section in ("mesh", "tokenizer"):
        _validate_axis_rules(config[section].logical_axis_rules, f"{section}.logical_axis_rules")
    for ax in MESH_AXES:
        v = getattr(config.mesh, ax)
        _require(v == -1 or v >= 1, f"mesh.{ax}", v, "-1 (fill) or a positive integer")
    _require(
        sum(getattr(config.mesh, ax) == -1 for ax in MESH_AXES) <= 1,
        "mesh",
        config.mesh.to_dict(),
        "at most one axis set to -1",
    )
    s = config.sampling
    _require(s.steps >= 1, "sampling.steps", s.steps, ">= 1")
    _require(s.shift > 0, "sampling.shift", s.shift, "> 0")
    _require(
        1 <= s.clip_frames < s.window_frames,
        "sampling.clip_frames",
        s.clip_frames,
        f"in [1, sampling.window_frames = {s.window_frames})",
    )
    for loop, section in ((config.train, "train"), (config.tokenizer.train, "tokenizer.train")):
        _validate_loop(loop, section)
    _require(
        config.train.data_timeout_s > 0, "train.data_timeout_s", config.train.data_timeout_s, "> 0 seconds"
    )
    _require(config.train.scan_unroll >= 1, "train.scan_unroll", config.train.scan_unroll, ">= 1")
    tt = config.tokenizer.train
    for field in ("frames_per_sample", "frame_interval", "frames_per_video", "eval_videos"):
        _require(getattr(tt, field) >= 1, f"tokenizer.train.{field}", getattr(tt, field), ">= 1")
    _require(
        tt.batch_size % tt.frames_per_sample == 0,
        "tokenizer.train.batch_size",
        tt.batch_size,
        f"a multiple of tokenizer.train.frames_per_sample = {tt.frames_per_sample}",
    )
    for optim, section in ((config.optim, "optim"), (config.tokenizer.optim, "tokenizer.optim")):
        _validate_optimizer(optim, section)
    _validate_partition(config)
    _validate_lora(config.lora)
    _validate_condition(config.condition)
    return config


def _validate_loop(t: ml_collections.ConfigDict, section: str) -> None:
    """The fields the training loop reads (train.loop.LoopSettings) of ``config.<section>``."""
    for field in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "batch_size"):
        if field in t:
            _require(getattr(t, field) >= 1, f"{section}.{field}", getattr(t, field), ">= 1")
    for field in ("eval_every", "profile_start", "profile_steps"):
        _require(getattr(t, field) >= 0, f"{section}.{field}", getattr(t, field), ">= 0")


def _validate_condition(co: ml_collections.ConfigDict) -> None:
    _require(co.kind in CONDITION_KINDS, "condition.kind", co.kind, f"one of {CONDITION_KINDS}")
    if co.kind == "class":
        _require(
            isinstance(co.num_classes, int) and co.num_classes >= 1,
            "condition.num_classes",
            co.num_classes,
            "an integer >= 1 with condition.kind = 'class' (the table adds one null row)",
        )
    if co.kind == "text":
        _require(
            isinstance(co.max_text_tokens, int) and co.max_text_tokens >= 1,
            "condition.max_text_tokens",
            co.max_text_tokens,
            "an integer >= 1 with condition.kind = 'text' (the prefix's static length)",
        )
    _require(0.0 <= co.dropout <= 1.0, "condition.dropout", co.dropout, "a probability in [0, 1]")


def condition_length(config: ml_collections.ConfigDict) -> int:
    """P, the static number of condition tokens before the frames (0 without a condition)."""
    co = config.condition
    return {"none": 0, "class": 1, "text": co.max_text_tokens}[co.kind]


def _validate_lora(lora: ml_collections.ConfigDict) -> None:
    _require(
        isinstance(lora.rank, int) and lora.rank >= 0,
        "lora.rank",
        lora.rank,
        "an integer >= 0 (0 = full fine-tuning, no adapter)",
    )
    _require(lora.alpha >= 0, "lora.alpha", lora.alpha, ">= 0 (0 = equal to lora.rank)")
    targets = tuple(lora.targets)
    unknown = [t for t in targets if t not in LORA_TARGETS]
    _require(
        not unknown,
        "lora.targets",
        targets,
        f"{', '.join(map(repr, unknown))} names no attention projection; each target is one of "
        f"{LORA_TARGETS} (qkv = Phi-3 qkv_proj, out = o_proj)",
    )
    _require(
        lora.rank == 0 or len(targets) > 0,
        "lora.targets",
        targets,
        f"at least one of {LORA_TARGETS} when lora.rank > 0 (else nothing would be trained)",
    )


def _validate_attention_tiles(a: ml_collections.ConfigDict) -> None:
    """The Pallas kernels' tiles: Triton's (powers of two >= 16) and splash's (multiples of 128)."""
    for kernel in ("fwd", "dkv", "dq"):
        k = a.block_sparse[kernel]
        for name in ("block_q", "block_k"):
            v = k[name]
            field = f"model.attention.block_sparse.{kernel}.{name}"
            _require(v >= 16 and v & (v - 1) == 0, field, v, "a power of two >= 16 (Triton tile shapes)")
        for name in ("num_warps", "num_stages"):
            field = f"model.attention.block_sparse.{kernel}.{name}"
            _require(k[name] >= 1, field, k[name], "a positive integer")
    for name in ("forward_kernel", "dq_kernel", "dkv_kernel"):
        kernel = a.block_sparse[name]
        _require(
            kernel in KERNEL_CHOICES,
            f"model.attention.block_sparse.{name}",
            kernel,
            f"one of {KERNEL_CHOICES}",
        )
    # The Hopper backward kernels' streamed tile: dQ's keys, dK/dV's queries.
    for kernel, tile in (("dq", "block_k"), ("dkv", "block_q")):
        if a.block_sparse[f"{kernel}_kernel"] != "triton":
            tiles = a.block_sparse[kernel]
            field = f"model.attention.block_sparse.{kernel}"
            _require(tiles[tile] in (64, 128), f"{field}.{tile}", tiles[tile], "64 or 128")
            _require(tiles.num_stages >= 2, f"{field}.num_stages", tiles.num_stages, "at least 2")
    hopper = a.block_sparse.hopper
    _require(
        hopper.block_k in (64, 128),
        "model.attention.block_sparse.hopper.block_k",
        hopper.block_k,
        "64 or 128",
    )
    _require(hopper.stages >= 2, "model.attention.block_sparse.hopper.stages", hopper.stages, "at least 2")
    for name in ("block_q", "block_kv"):
        v = a.splash[name]
        _require(v > 0 and v % 128 == 0, f"model.attention.splash.{name}", v, "a positive multiple of 128")


def _validate_axis_rules(rules, field: str) -> None:
    """(logical axis, mesh axis, axes or None) pairs naming only the mesh's axes."""
    for rule in rules:
        ok = len(rule) == 2 and isinstance(rule[0], str)
        axes = rule[1] if ok else None
        named = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        _require(
            ok and all(a in MESH_AXES for a in named),
            field,
            rule,
            f"(logical axis, mesh axis or tuple of them or None) pairs over the mesh axes {MESH_AXES}",
        )


def _validate_optimizer(o: ml_collections.ConfigDict, section: str) -> None:
    """The fields train.step.make_optimizer reads: AdamW's and the schedule's signs and ranges."""
    _require(
        o.learning_rate >= 0,
        f"{section}.learning_rate",
        o.learning_rate,
        ">= 0 (a negative rate climbs the loss; 0 keeps the parameters)",
    )
    for beta in ("b1", "b2"):
        v = getattr(o, beta)
        _require(0 <= v < 1, f"{section}.{beta}", v, "a decay rate in [0, 1)")
    _require(o.eps > 0, f"{section}.eps", o.eps, "> 0 (it keeps Adam's division finite)")
    _require(o.weight_decay >= 0, f"{section}.weight_decay", o.weight_decay, ">= 0")
    _require(o.warmup_steps >= 0, f"{section}.warmup_steps", o.warmup_steps, ">= 0")
    _require(
        o.decay_steps >= 0, f"{section}.decay_steps", o.decay_steps, ">= 0 (0 = constant after the warm-up)"
    )
    _require(o.grad_clip_norm >= 0, f"{section}.grad_clip_norm", o.grad_clip_norm, ">= 0 (0 = no clipping)")


def _validate_partition(config: ml_collections.ConfigDict) -> None:
    lay, n = config.layout, config.data.num_frames
    if lay.partition != "fixed":
        return
    clips = tuple(lay.fixed_partition)
    _require(
        len(clips) > 0 and all(isinstance(k, int) and k >= 1 for k in clips),
        "layout.fixed_partition",
        clips,
        "the frames of each clip (positive integers) when layout.partition is 'fixed'",
    )
    _require(
        sum(clips) == n,
        "layout.fixed_partition",
        clips,
        f"clip lengths that sum to data.num_frames = {n} (they sum to {sum(clips)})",
    )


def rope_attention_scaling(config: ml_collections.ConfigDict) -> float:
    """LongRoPE's cos/sin magnitude: sqrt(1 + ln(max/orig) / ln(orig)); 1 without scaling."""
    r = config.model.rope
    if r.factors == "none":
        return 1.0
    ratio = r.max_position_embeddings / r.original_max_position_embeddings
    if ratio <= 1.0:
        return 1.0
    return math.sqrt(1.0 + math.log(ratio) / math.log(r.original_max_position_embeddings))
