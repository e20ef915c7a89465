"""A linear probe on pooled features (``vgpt probe``): top-1 / top-5 by layer, as JSON and a plot.

For each features file of a folder written by ``vgpt features`` (one per layer, and the raw-pixel
baseline if it was asked for), the videos a train split and a test split name are looked up by id;
ids without features are skipped and counted, as are videos without a label. The features are
standardised with the train split's mean and standard deviation (per dimension; features pooled
per frame are flattened first), and a linear softmax classifier is trained with AdamW (decoupled
weight decay on the weights, not the bias) over shuffled minibatches.

The weight decay is chosen on a held-out part of the train split (``val_fraction``, a seeded draw):
each candidate is trained on the rest (standardised with the rest's statistics) and scored top-1 on
the held-out part; the best is trained again on the whole train split and scored on the test split.

Split files are UCF-101's lists as distributed (``trainlist01.txt``: ``CLASS/VIDEO.avi N`` lines,
``testlist01.txt``: ``CLASS/VIDEO.avi``) or JSONL manifests (their ``video`` fields); ids are the
paths as written there, which ``vgpt features`` stores for a manifest or a class folder. Labels come
from the features.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vgpt_jax.evaluation.features import META_FILE, PIXELS

TOP_K = 5
FEATURES_FILE = re.compile(r"^features_(L(\d+)|pixels)\.npz$")


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How the linear classifier is trained and its weight decay chosen."""

    epochs: int = 100
    learning_rate: float = 1e-3
    weight_decays: tuple[float, ...] = (0.0, 1e-2, 1e-1, 1.0)
    batch_size: int = 256
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("--epochs and --batch-size must be at least 1 and --lr positive")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise ValueError(f"--weight-decays {self.weight_decays}: give one or more values >= 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"--val-fraction {self.val_fraction}: must be between 0 and 1")


@dataclasses.dataclass
class FeatureFile:
    """One ``features_{name}.npz``: ``features`` (N, D) (per-frame features flattened), ids, labels."""

    name: str  # 'L8' or 'pixels'
    features: np.ndarray
    video_ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: dict[str, Any]

    @property
    def layer(self) -> int | None:
        return None if self.name == PIXELS else int(self.name[1:])


def load_feature_folder(folder: str | pathlib.Path) -> list[FeatureFile]:
    """The features files of a ``vgpt features`` folder, layers in order, then the pixel baseline.

    ValueError if there are none, or if one was written by another extraction than the folder's
    ``features_meta.json`` describes (features that do not belong together are never probed together).
    """
    folder = pathlib.Path(folder)
    paths = sorted(
        (p for p in folder.glob("features_*.npz") if FEATURES_FILE.match(p.name)),
        key=lambda p: (p.name == f"features_{PIXELS}.npz", int(FEATURES_FILE.match(p.name).group(2) or 0)),
    )
    if not paths or not (folder / META_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} holds no features of `vgpt features` (features_L*.npz and {META_FILE})"
        )
    folder_meta = json.loads((folder / META_FILE).read_text())
    files = []
    for path in paths:
        with np.load(path) as saved:
            meta = json.loads(str(saved["meta"]))
            name = meta.pop("features")
            if meta != folder_meta or path.name != f"features_{name}.npz":
                raise ValueError(
                    f"{path} was written by another extraction than {folder / META_FILE} describes: "
                    "features of different layers, models or settings are not probed together; "
                    "extract them again into a folder of their own"
                )
            features = saved["features"]
            files.append(
                FeatureFile(
                    name,
                    features.reshape(len(features), -1).astype(np.float32),
                    saved["video_ids"],
                    saved["labels"],
                    saved["class_names"].tolist(),
                    meta,
                )
            )
    return files


def read_split(path: str | pathlib.Path) -> tuple[list[str], int]:
    """(video ids in order, bad rows) of a split file: a JSONL manifest or a UCF-101 list."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the split file {path} does not exist (e.g. UCF-101's trainlist01.txt)")
    ids, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                video = json.loads(line).get("video")
            except (json.JSONDecodeError, AttributeError):
                video = None
            if isinstance(video, str) and video:
                ids.append(video)
            else:
                bad += 1
        else:
            ids.append(line.split()[0].replace("\\", "/"))
    return ids, bad


@dataclasses.dataclass
class Selection:
    """Rows of a features file that a split names (with a label), and what was skipped."""

    rows: np.ndarray
    missing: list[str]  # ids without features (not extracted, or unreadable)
    unlabelled: list[str]


def select(ids: Sequence[str], file: FeatureFile) -> Selection:
    index = {video_id: i for i, video_id in enumerate(file.video_ids.tolist())}
    rows, missing, unlabelled = [], [], []
    for video_id in ids:
        row = index.get(video_id)
        if row is None:
            missing.append(video_id)
        elif file.labels[row] < 0:
            unlabelled.append(video_id)
        else:
            rows.append(row)
    return Selection(np.asarray(rows, np.int64), missing, unlabelled)


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every array minus ``train``'s per-dimension mean, over its standard deviation (constant
    dimensions are only centred)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def _loss(params, x, y):
    logits = x @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size"))
def _fit(x, y, key, weight_decay, learning_rate, *, num_classes: int, epochs: int, batch_size: int):
    n, d = x.shape
    params = {"w": jnp.zeros((d, num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay, mask={"w": True, "b": False})
    steps = n // batch_size

    def step(carry, rows):
        params, state = carry
        grads = jax.grad(_loss)(params, x[rows], y[rows])
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    def epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, n)[: steps * batch_size].reshape(steps, batch_size)
        return jax.lax.scan(step, carry, order)[0], None

    (params, _), _ = jax.lax.scan(epoch, (params, optimizer.init(params)), jax.random.split(key, epochs))
    return params


def fit_linear(
    x: np.ndarray, y: np.ndarray, num_classes: int, weight_decay: float, settings: ProbeSettings
) -> dict[str, np.ndarray]:
    """A linear classifier ``x @ w + b`` trained on (N, D) features and labels (N,): {'w', 'b'}."""
    params = _fit(
        jnp.asarray(x),
        jnp.asarray(y, jnp.int32),
        jax.random.key(settings.seed),
        weight_decay,
        settings.learning_rate,
        num_classes=num_classes,
        epochs=settings.epochs,
        batch_size=min(settings.batch_size, len(x)),
    )
    return jax.tree.map(np.asarray, params)


def logits_of(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return x @ params["w"] + params["b"]


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits (ties broken by lower class index)."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def held_out_split(n: int, settings: ProbeSettings) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) of a train split of n videos, a seeded draw of ``val_fraction``."""
    order = np.random.default_rng(settings.seed).permutation(n)
    held = min(max(1, round(settings.val_fraction * n)), n - 1)
    return np.sort(order[held:]), np.sort(order[:held])


def probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    settings: ProbeSettings,
) -> dict[str, Any]:
    """The weight-decay sweep on a held-out part of the train split, then the chosen classifier
    trained on all of it and scored on the test split: {top1, top5, k, weight_decay, val_top1}."""
    if len(train_x) < 2 or not len(test_x):
        raise ValueError(
            f"the probe needs 2 or more labelled train videos and 1 or more test videos with features, "
            f"got {len(train_x)} and {len(test_x)}"
        )
    fit_rows, held_rows = held_out_split(len(train_x), settings)
    fit_x, held_x = standardise(train_x[fit_rows], train_x[held_rows])
    val_top1 = {}
    for weight_decay in settings.weight_decays:
        params = fit_linear(fit_x, train_y[fit_rows], num_classes, weight_decay, settings)
        val_top1[weight_decay] = top_k_accuracy(logits_of(params, held_x), train_y[held_rows], 1)
    best = max(settings.weight_decays, key=lambda wd: val_top1[wd])  # the first of equals
    train_z, test_z = standardise(train_x, test_x)
    logits = logits_of(fit_linear(train_z, train_y, num_classes, best, settings), test_z)
    k = min(TOP_K, num_classes)
    return {
        "top1": top_k_accuracy(logits, test_y, 1),
        f"top{TOP_K}": top_k_accuracy(logits, test_y, k),
        "k": k,
        "weight_decay": best,
        "val_top1": {str(wd): acc for wd, acc in val_top1.items()},
    }


def probe_folder(
    folder: str | pathlib.Path,
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    settings: ProbeSettings,
    log=print,
) -> dict[str, Any]:
    """The probe of every features file of a folder; {meta, counts, class_names, results by name}."""
    files = load_feature_folder(folder)
    results, counts = {}, {}
    for file in files:
        train, test = select(train_ids, file), select(test_ids, file)
        counts = {
            "train_videos": len(train.rows),
            "test_videos": len(test.rows),
            "missing_train": len(train.missing),
            "missing_test": len(test.missing),
            "unlabelled": len(train.unlabelled) + len(test.unlabelled),
            "first_missing": (train.missing + test.missing)[:5],
        }
        labels = file.labels[np.concatenate([train.rows, test.rows])]
        num_classes = max(int(labels.max()) + 1, len(file.class_names))
        log(f"probing {pathlib.Path(folder).name}/{file.name}: {file.features.shape[1]} dimensions")
        results[file.name] = {
            "layer": file.layer,
            "num_classes": num_classes,
            **probe(
                file.features[train.rows],
                file.labels[train.rows],
                file.features[test.rows],
                file.labels[test.rows],
                num_classes,
                settings,
            ),
        }
    return {"folder": str(folder), "meta": files[0].meta, "counts": counts, "results": results}


def plot_accuracy(report: Mapping[str, Any], path: str | pathlib.Path) -> None:
    """Top-1 (solid) and top-5 (dashed) test accuracy against depth, one colour per features
    folder; pixel baselines as dotted horizontal lines, chance in grey."""
    from matplotlib.figure import Figure  # Figure renders with Agg and leaves pyplot's state alone

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    num_classes = 0
    for i, (name, run) in enumerate(report["runs"].items()):
        color = f"C{i}"
        layers = {r["layer"]: r for r in run["results"].values() if r["layer"] is not None}
        depth = sorted(layers)
        for metric, style in (("top1", "-o"), (f"top{TOP_K}", "--^")):
            if depth:
                values = [100 * layers[d][metric] for d in depth]
                ax.plot(depth, values, style, color=color, label=f"{name} {metric}")
        if PIXELS in run["results"]:
            pixels = run["results"][PIXELS]
            ax.axhline(100 * pixels["top1"], color=color, linestyle=":", label=f"{name} raw pixels top1")
        num_classes = max(num_classes, *(r["num_classes"] for r in run["results"].values()))
    ax.axhline(100 / num_classes, color="grey", linewidth=0.8, label="chance top1")
    spec = next(iter(report["runs"].values()))["meta"]["spec"]
    ax.set(
        xlabel="layer (hidden state after it)",
        ylabel="test accuracy (%)",
        title=f"linear probe: {spec['pooling']} pooling, {spec['views']} x {spec['num_frames']} frames",
        ylim=(0, 100),
    )
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def probe_folders(
    folders: Mapping[str, str | pathlib.Path],
    train_split: str | pathlib.Path,
    test_split: str | pathlib.Path,
    settings: ProbeSettings,
    output_dir: str | pathlib.Path,
    log=print,
) -> dict[str, Any]:
    """`vgpt probe`: every folder's features probed on the splits; writes ``probe.json`` and
    ``probe.png`` to ``output_dir`` and returns the report."""
    (train_ids, train_bad), (test_ids, test_bad) = read_split(train_split), read_split(test_split)
    report = {
        "train_split": str(train_split),
        "test_split": str(test_split),
        "split_bad_rows": train_bad + test_bad,
        "settings": dataclasses.asdict(settings),
        "runs": {
            name: probe_folder(folder, train_ids, test_ids, settings, log) for name, folder in folders.items()
        },
    }
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_accuracy(report, out / "probe.png")
    return report
