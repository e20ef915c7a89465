"""A TFDS ``data_source`` of prepared clips, read without TensorFlow, and the builder that prepares one.

``tfds.features.Video`` and encoded image features decode through TensorFlow, so clips are stored
as raw ``uint8`` tensors (``encoding='bytes'``, which allows the variable length and resolution)
in ArrayRecord files; reading them is NumPy only. Examples have two features: ``video``
(T, H, W, 3) uint8 RGB and ``fps`` float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.array_record_source import StoredClip

BUILDER_NAME = "vgpt_clips"


class VgptClips(tfds.core.GeneratorBasedBuilder):
    """Clips handed in as ``{split: iterable of {"video", "fps"}}`` (see :func:`prepare_clips`)."""

    VERSION = tfds.core.Version("1.0.0")
    # No checksum file lives beside this module. Saying so also skips tfds' lookup of the module's
    # path, which imports the optional ``importlib_resources`` package.
    code_path = None

    def __init__(self, *, splits: Mapping[str, Iterable[dict]] | None = None, **kwargs):
        self._splits = dict(splits or {})
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Video clips stored as raw uint8 tensors (no TensorFlow needed to read them).",
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Tensor(
                        shape=(None, None, None, 3), dtype=np.uint8, encoding="bytes"
                    ),
                    "fps": tfds.features.Scalar(dtype=np.float32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(examples) for name, examples in self._splits.items()}

    def _generate_examples(self, examples):
        for key, example in enumerate(examples):
            yield key, {"video": np.asarray(example["video"], np.uint8), "fps": float(example["fps"])}


def prepare_clips(data_dir: str, config_name: str, splits: Mapping[str, Iterable[dict]]) -> str:
    """Prepares ``splits`` as the TFDS dataset ``vgpt_clips/<config_name>`` in ArrayRecord files.

    Returns the builder directory to pass to :class:`TfdsClipSource`.
    """
    tfds.disable_progress_bar()
    builder = VgptClips(
        splits=splits,
        data_dir=data_dir,
        config=tfds.core.BuilderConfig(name=config_name),
        file_format="array_record",
    )
    builder.download_and_prepare()
    return str(builder.data_dir)


class TfdsClipSource:
    """Grain ``RandomAccessDataSource`` over one split of a prepared TFDS dataset; items are StoredClip.

    ``builder_dir`` is the versioned folder (``.../vgpt_clips/<config>/1.0.0``); any TFDS dataset
    with a uint8 ``video`` feature of shape (T, H, W, 3) and ArrayRecord files works.
    """

    def __init__(self, builder_dir: str, split: str = "train", video_key: str = "video"):
        try:
            builder = tfds.builder_from_directory(builder_dir)
        except OSError as e:  # tfds' DatasetInfoFileError
            raise FileNotFoundError(
                f"no prepared TFDS dataset in {builder_dir!r} ({e}); pass the versioned folder that holds "
                "dataset_info.json, e.g. DATA_DIR/vgpt_clips/NAME/1.0.0"
            ) from e
        if split not in builder.info.splits:
            raise ValueError(f"{builder_dir!r} has no split {split!r}; it has {list(builder.info.splits)}")
        if video_key not in builder.info.features:
            raise ValueError(
                f"{builder_dir!r} has no feature {video_key!r}; features: {list(builder.info.features)}"
            )
        self.builder_dir, self.split, self.video_key = builder_dir, split, video_key
        self._data = builder.as_data_source(split)
        if len(self._data) == 0:
            raise ValueError(f"split {split!r} of {builder_dir!r} is empty")

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> StoredClip:
        example = self._data[index]
        meta = {
            k: np.asarray(v).item() for k, v in example.items() if k != self.video_key and np.ndim(v) == 0
        }
        return StoredClip({"video": example[self.video_key]}, meta)

    def __repr__(self) -> str:
        return f"TfdsClipSource({self.builder_dir!r}, split={self.split!r}, {len(self)} clips)"
