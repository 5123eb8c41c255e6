"""The batch generator: ImageRecords -> (network inputs, grid targets) batches for Model.fit.

Determinism: the order of an epoch is a permutation seeded by (config.seed, epoch), and
each sample's augmentation by (config.seed, epoch, record index), so a batch's content
does not depend on which worker thread or process makes it, nor on the order batches are
asked for. Pass `shuffle=False` to `Model.fit`: this dataset shuffles itself, and Keras'
own shuffling of batch order would only make runs differ.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from typing import List, Optional

import cv2
import keras
import numpy as np

from config import Config
from data.augment import AugmentSpec, load_training_sample, mosaic
from data.draw import draw_boxes, draw_points
from data.grid import encode_levels
from data.image import PAD_VALUE, to_network_input
from data.landmarks import NUM_LANDMARKS, POINT_NAMES
from data.records import ImageRecord
from common.errors import DatasetError, ImageError
from common.files import atomic_path

# Attempts at other (random) images before an unreadable one becomes a blank sample.
MAX_REPLACEMENTS = 3
# Debug pictures: the first images of the first batches of every epoch.
DEBUG_BATCHES = 2
DEBUG_IMAGES_PER_BATCH = 4

# Tags that keep the shuffle stream and the per-sample streams of one epoch apart.
_SHUFFLE_STREAM, _SAMPLE_STREAM = 0, 1


class FaceGridDataset(keras.utils.PyDataset):
    """Batches of augmented images and their grid targets, read from disk on demand.

    Batch `i` is `(images, targets)`:
        images: uint8 (B, S, S, 3) RGB (`data.image.to_network_input`; the network scales
            them to [-1, 1] itself).
        targets: float32 (B, G, G, 5), `data.grid.encode_grid` of every face of each image
            (with several grid levels (B, N, 5), `data.grid.encode_levels`). With
            `config.landmarks` 17 channels: the faces' points too (`data.grid` module doc;
            samples are loaded with their points, NaN where a source has none).
    `load_batch(i)` gives the same batch plus its faces in input pixels (for metrics).

    Training (`training=True`) augments when `config.augment` (see `data.augment`),
    shuffles every epoch unless `shuffle=False`, and drops the last partial batch when it
    shuffles (the dropped images change every epoch). Validation is deterministic: same
    order, same pixels, every call, the last batch possibly smaller.

    Only the records are held; images are read per batch. An unreadable image is skipped
    with one warning naming it: in training another image of the dataset takes its place,
    in validation a blank all-background one.

    Counters (`collisions`: faces lost because a larger face's centre shared their grid
    cell; `encoded_faces`: faces encoded, ignored ones included) add up over the batches
    made in this process; with `use_multiprocessing=True`, batches made in worker
    processes are not counted.

    Args:
        records: the images and their faces.
        config: input_size, grid_size, batch_size, seed, augment, letterbox,
            min_face_size; workers and use_multiprocessing unless given in kwargs.
        training: training pipeline (augmentation, shuffling) or validation.
        shuffle: shuffle every epoch; None means `training`.
        debug_dir: if set, the first `DEBUG_IMAGES_PER_BATCH` images of the first
            `DEBUG_BATCHES` batches of every epoch are written there as PNGs with their
            boxes drawn (faces green, ignored grey), to check the augmentation by eye.
        endless: batches never run out: batch `i` is batch `i % len(self)` of the current
            epoch's order. For `Model.fit(steps_per_epoch=N)`: Keras asks an endless
            dataset for N batches per epoch, where a finite one would carry its pass over
            several epochs and cut some short ("Your input ran out of data").
        shard_index, shard_count: multi-worker training (model/distributed.py): every
            worker has the same global order and batches of `config.batch_size` (the
            global batch), and batch `i` is shard `shard_index` of `shard_count` equal
            slices of global batch `i`. Sharded, the last partial global batch is always
            dropped, so every worker runs the same number of steps. Default: one shard.
        **kwargs: `keras.utils.PyDataset` arguments (workers, use_multiprocessing,
            max_queue_size). With workers > 1, OpenCV's internal threading is turned off
            for the process (`cv2.setNumThreads(1)`): the workers parallelise instead.
    """

    def __init__(
        self,
        records: List[ImageRecord],
        config: Config,
        training: bool,
        shuffle: Optional[bool] = None,
        debug_dir: Optional[str] = None,
        endless: bool = False,
        shard_index: int = 0,
        shard_count: int = 1,
        **kwargs,
    ):
        kwargs.setdefault("workers", config.workers)
        kwargs.setdefault("use_multiprocessing", config.use_multiprocessing)
        super().__init__(**kwargs)
        if self.workers > 1:
            # The workers are the parallelism: OpenCV's own thread pool, entered by several
            # workers at once, only contends (measured on 2 cores: 2 worker threads ran at
            # 0.8x of one with it, up to 2x without). Process-wide; worker processes inherit it.
            cv2.setNumThreads(1)
        self.records = list(records)
        if not self.records:
            raise DatasetError("FaceGridDataset: no image records to read")
        self.config = config
        self.grid = config.grid_spec()  # what the targets are encoded for
        self.augment_spec = AugmentSpec.from_config(config)  # how samples are made
        self.training = bool(training)
        self.shuffle = self.training if shuffle is None else bool(shuffle)
        self.debug_dir = debug_dir
        self.endless = bool(endless)
        self.shard_index, self.shard_count = int(shard_index), int(shard_count)
        if not 0 <= self.shard_index < self.shard_count or config.batch_size % self.shard_count:
            raise DatasetError(f"FaceGridDataset: shard {shard_index} of {shard_count} for a "
                               f"global batch of {config.batch_size}: need 0 <= shard < count "
                               "and a batch that the count divides")
        if self.shard_count > 1 and len(self.records) < config.batch_size:
            raise DatasetError(f"FaceGridDataset: {len(self.records)} images, fewer than one "
                               f"global batch of {config.batch_size}")
        self.epoch = 0
        self.collisions = 0
        self.encoded_faces = 0
        self.unreadable = set()  # paths already reported, skipped without a new attempt
        self._lock = threading.Lock()
        self._order = self._epoch_order()

    # --- Keras PyDataset protocol ---------------------------------------------------

    def __len__(self) -> int:
        n, b = len(self.records), self.config.batch_size
        if (self.training and self.shuffle or self.shard_count > 1) and n >= b:
            return n // b
        return math.ceil(n / b)

    @property
    def num_batches(self) -> Optional[int]:
        """Batches per pass for Keras; None (endless) when `endless`."""
        return None if self.endless else len(self)

    def __getitem__(self, index: int):
        """Batch `index` of the current epoch: (images (B,S,S,3), targets (B,G,G,C))."""
        if self.endless:
            index %= len(self)
        images, targets, _ = self.load_batch(index)
        return images, targets

    def load_batch(self, index: int):
        """Batch `index` with the faces its targets were encoded from.

        Returns:
            (images uint8 (B, S, S, 3) RGB, targets float32 (B, G, G, C) or (B, N, C)
            (C = `grid.target_channels`: 5, or 17 with landmarks),
            faces: B tuples (boxes (N, 4) float32 x1, y1, x2, y2 input pixels, ignore (N,)
            bool[, points (N, 6, 2) float32 input pixels with landmarks])),
            the faces before grid encoding (so also those a collision left out).
        """
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range (0..{len(self) - 1})")
        epoch, order = self.epoch, self._order
        b = self.config.batch_size
        ids = order[index * b : (index + 1) * b]
        if self.shard_count > 1:  # this worker's slice of the global batch
            part = b // self.shard_count
            ids = ids[self.shard_index * part : (self.shard_index + 1) * part]
        grid = self.grid
        s = grid.input_size
        images = np.empty((len(ids), s, s, 3), dtype=np.uint8)
        targets = np.empty((len(ids),) + grid.target_shape, dtype=np.float32)
        faces = []
        collisions = 0
        for j, record_index in enumerate(ids):
            sample = self._sample(int(record_index), epoch)
            image, boxes, ignore = sample[:3]
            points = sample[3] if grid.landmarks else None
            encoded = encode_levels(boxes, ignore, grid, points)
            images[j], targets[j] = image, encoded.grid
            faces.append(sample[1:])
            collisions += encoded.collisions
            if self.debug_dir and index < DEBUG_BATCHES and j < DEBUG_IMAGES_PER_BATCH:
                self._write_debug(epoch, index, j, image, boxes, ignore, points)
        with self._lock:
            self.collisions += collisions
            self.encoded_faces += sum(len(f[0]) for f in faces)
        return to_network_input(images), targets, faces

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Jump to an epoch (e.g. when resuming training): its order and augmentation."""
        self.epoch = int(epoch)
        self._order = self._epoch_order()

    # --- pickling (use_multiprocessing with spawn) ----------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- helpers ----------------------------------------------------------------------

    def _epoch_order(self) -> np.ndarray:
        n = len(self.records)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self._seed, self.epoch, _SHUFFLE_STREAM])
        return rng.permutation(n)

    @property
    def _seed(self) -> int:
        return self.config.seed % (2**63)  # SeedSequence wants a non-negative entropy

    def _sample(self, record_index: int, epoch: int):
        """(image (S,S,3) uint8, boxes (N,4) input px, ignore (N,)[, points (N,6,2) input
        px with landmarks]) of one record; in
        training, with chance `mosaic_prob`, a mosaic of it and mosaic_tiles^2 - 1 other
        records drawn by the sample's seed (data.augment.mosaic)."""
        rng = np.random.default_rng([self._seed, epoch, _SAMPLE_STREAM, record_index])
        spec = self.augment_spec
        if self.training and spec.augment and spec.mosaic_prob > 0 and (
                rng.random() < spec.mosaic_prob):
            n = spec.mosaic_tiles
            others = rng.integers(len(self.records), size=n * n - 1)
            tiles = [self._one_sample(self.records[i], rng)
                     for i in [record_index, *others.tolist()]]
            return mosaic(tiles, self.grid.input_size, spec.min_face_size)
        return self._one_sample(self.records[record_index], rng)

    def _one_sample(self, record, rng):
        """One record's sample, replaced by another image or a blank one when it cannot
        be read."""
        for attempt in range(MAX_REPLACEMENTS + 1):
            if record.path not in self.unreadable:
                try:
                    return load_training_sample(record, self.grid, self.augment_spec, rng,
                                                self.training, self.config.max_image_pixels,
                                                with_points=self.grid.landmarks)
                except ImageError as e:
                    self._report_unreadable(record.path, e)
            if not self.training or attempt == MAX_REPLACEMENTS:
                break
            record = self.records[int(rng.integers(len(self.records)))]
        s = self.grid.input_size
        blank = (
            np.full((s, s, 3), PAD_VALUE, dtype=np.uint8),
            np.zeros((0, 4), dtype=np.float32),
            np.zeros((0,), dtype=bool),
        )
        if self.grid.landmarks:
            blank += (np.zeros((0, len(POINT_NAMES), 2), dtype=np.float32),)
        return blank

    def _report_unreadable(self, path: str, error: ImageError) -> None:
        with self._lock:
            if path in self.unreadable:
                return
            self.unreadable.add(path)
        instead = "another image" if self.training else "a blank image"
        warnings.warn(f"{error}; skipped, {instead} used instead", stacklevel=3)

    def _write_debug(self, epoch, index, j, image, boxes, ignore, points=None) -> None:
        path = os.path.join(self.debug_dir, f"epoch{epoch:03d}_batch{index:03d}_{j:02d}.png")
        drawn = draw_boxes(image, boxes, ignore=ignore)
        if points is not None:  # the five landmarks (a mouth centre alone is not drawn)
            drawn = draw_points(drawn, points[:, :NUM_LANDMARKS])
        with atomic_path(path) as tmp:
            if not cv2.imwrite(tmp, drawn):
                raise OSError(f"{path}: cannot write debug image")
