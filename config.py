"""The one configuration of the project: a typed dataclass with the user's defaults.

Every CLI starts from `Config()`, overrides fields with its flags (see `common/cli.py`), and
writes the resolved configuration beside the run's logs with `save_config`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

from data.grid import GridSpec
from data.image import MAX_IMAGE_PIXELS
from common.checks import check_type
from common.errors import ConfigError
from common.files import atomic_write_text

# The official WIDER FACE layout, unpacked under data/ by `python tools/download.py`.
WIDER_ROOT = os.path.join("data", "WIDER")
# The bundled demo set written by `python tools/make_demo.py` (the README's main command).
DEMO_ROOT = os.path.join("data", "demo")
# Learning rate after warm-up (model.training.LearningRateSchedule).
LR_SCHEDULES = ("constant", "cosine")
# Config.distribute (model/distributed.py picks the strategy).
DISTRIBUTE_MODES = ("auto", "mirrored", "multiworker", "none")
# Config.box_iou_loss: the overlap term of the box loss (model/loss.py).
BOX_IOU_LOSSES = ("giou", "diou", "eiou")
# Config.landmark_loss: the landmark term's per-coordinate loss (model/loss.py).
LANDMARK_LOSSES = ("smooth_l1", "wing")


def _finite_at_least(low: float, strict: bool = False):
    """Rule: a finite number > low (strict) or >= low."""
    if strict:
        return (lambda v: math.isfinite(v) and v > low), f"must be a finite number > {low:g}"
    return (lambda v: math.isfinite(v) and v >= low), f"must be a finite number >= {low:g}"


def _fraction(low_open: bool = False):
    """Rule: a number in [0, 1] (or (0, 1] with low_open); NaN fails the comparison."""
    if low_open:
        return (lambda v: 0.0 < v <= 1.0), "must be in (0, 1]"
    return (lambda v: 0.0 <= v <= 1.0), "must be in [0, 1]"


def _int_at_least(low: int, note: str = ""):
    return (lambda v: v >= low), f"must be >= {low}{note}"


SEED_MAX = 2**32 - 1  # NumPy's legacy seeding (keras.utils.set_random_seed) takes 0..2**32-1

# One rule per numeric field of Config: (test, what the message says it must be). Types
# are checked before (see common.checks.check_type), so the tests compare numbers only.
# The grid's fields (input_size, grid_size, grid_levels, centre_radius) check
# themselves in data.grid.GridSpec.
_NUMERIC_RULES = {
    "alpha": _finite_at_least(0, strict=True),
    "head_channels": _int_at_least(1),
    "min_face_size": _finite_at_least(0),
    "crop_prob": _fraction(),
    "crop_min_scale": _finite_at_least(0, strict=True),
    "crop_max_scale": _finite_at_least(0, strict=True),
    "face_centred_prob": _fraction(),
    "min_visible_fraction": _fraction(),
    "mosaic_prob": _fraction(),
    "mosaic_tiles": ((lambda v: 2 <= v <= 4), "must be 2, 3 or 4"),
    "flip_prob": _fraction(),
    "jitter_prob": _fraction(),
    "brightness_delta": ((lambda v: 0.0 <= v <= 255.0), "must be in [0, 255]"),
    "contrast_min": _finite_at_least(0),
    "contrast_max": _finite_at_least(0),
    "saturation_min": _finite_at_least(0),
    "saturation_max": _finite_at_least(0),
    # OpenCV's 8-bit hue is 0..179 (2 degrees a unit): 90 already reaches the opposite hue.
    "hue_delta": ((lambda v: 0 <= v <= 90), "must be in [0, 90] (OpenCV hue units)"),
    "max_images": _int_at_least(0, " (0 = all)"),
    "max_image_pixels": _int_at_least(1),
    "workers": _int_at_least(0),
    "seed": ((lambda v: 0 <= v <= SEED_MAX), f"must be in [0, {SEED_MAX}]"),
    "batch_size": _int_at_least(1),
    "head_epochs": _int_at_least(0),
    "finetune_epochs": _int_at_least(0),
    "learning_rate": _finite_at_least(0, strict=True),
    "finetune_learning_rate": _finite_at_least(0, strict=True),
    "warmup_epochs": _finite_at_least(0),
    "weight_decay": _finite_at_least(0),
    "early_stopping_patience": _int_at_least(0, " (0 disables)"),
    "reduce_lr_patience": _int_at_least(0, " (0 disables)"),
    # Keras' ReduceLROnPlateau refuses factors >= 1; 0 would set the learning rate to 0.
    "reduce_lr_factor": ((lambda v: 0.0 < v < 1.0), "must be in (0, 1)"),
    "keep_best": _int_at_least(1),
    "steps_per_epoch": _int_at_least(0, " (0 = one pass over the data)"),
    "validation_steps": _int_at_least(0, " (0 = one pass over the validation data)"),
    "focal_gamma": _finite_at_least(0),
    "focal_alpha": _fraction(),
    "ema_decay": ((lambda v: 0.0 <= v < 1.0), "must be in [0, 1) (0 disables)"),
    "box_loss_weight": _finite_at_least(0),
    "objectness_loss_weight": _finite_at_least(0),
    "landmark_loss_weight": _finite_at_least(0),
    "score_threshold": _fraction(),
    "eval_score_threshold": _fraction(),
    "nms_iou": _fraction(low_open=True),
    "max_detections": _int_at_least(0, " (0 = no cap)"),
}


# (low, high) field pairs of one range each: low <= high.
_RANGES = (
    ("crop_min_scale", "crop_max_scale"),
    ("contrast_min", "contrast_max"),
    ("saturation_min", "saturation_max"),
)


def check_lr_schedule(name: str) -> None:
    """Raise ConfigError unless `name` is one of LR_SCHEDULES."""
    if name not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule={name!r}: must be one of {', '.join(LR_SCHEDULES)}")


@dataclass
class Config:
    """All knobs of data, model, training and detection. Field docs are the CLI help."""

    # --- network geometry -------------------------------------------------------------
    input_size: int = 224  # side of the square network input, pixels
    grid_size: int = 7  # cells per side of the output grid (7, 14 or 28 at 224)
    # Grid levels at once (YuNet, SCRFD): 1 is the one grid above; 3 with 8-px cells adds
    # grids of 16- and 32-px cells, each face assigned to the level that fits its size
    # (data/grid.py). grid_size is the finest level's; each next level has half as many.
    grid_levels: int = 1
    alpha: float = 0.75  # MobileNetV2 width multiplier
    backbone_weights: str = "imagenet"  # 'imagenet', 'none', or a path to a weights file
    head_channels: int = 128  # width of the grid head's hidden convolutions
    # Depthwise-separable 3x3 convolutions in the neck and head (8x fewer MACs at 64 wide).
    head_separable: bool = False
    # Faces also predicted by up to 3 neighbouring cells (data/grid.py), centre offsets in
    # [-0.5, 1.5) cells; off: the one cell holding the face centre, offsets in [0, 1).
    neighbour_cells: bool = False
    # > 0: centre sampling (FCOS / YOLOX; YuNet 2.5): every cell of a face within this
    # many cells of its centre is positive, offsets in [0.5 - r, 0.5 + r] (data/grid.py).
    centre_radius: float = 0.0
    # The network also predicts five landmarks per face (eyes, nose tip, mouth corners;
    # data/landmarks.py), ten more channels per cell (data/grid.py); they are learned
    # from the faces whose labels have points.
    landmarks: bool = False

    # --- data ---------------------------------------------------------------------------
    dataset: str = WIDER_ROOT  # WIDER root (WIDER_train/, WIDER_val/, wider_face_split/)
    val_dataset: str = ""  # validation source; empty means the val split of `dataset`
    dataset_format: str = "auto"  # auto, wider, labelme, yolo, coco, voc, retinaface
    face_labels: str = ""  # labels / classes read as faces in custom sets ("" = all; COCO: face)
    negatives: str = ""  # folder of face-free images added as all-background samples
    min_face_size: float = 4.0  # faces smaller than this (input pixels) are ignored, not background
    letterbox: bool = True  # keep aspect ratio when resizing (pad), else stretch
    augment: bool = True  # random crop / flip / photometric jitter in training
    crop_prob: float = 0.75  # chance of a random crop per training image (else the whole image)
    crop_min_scale: float = 0.3  # smallest square crop side, fraction of the image's short side
    crop_max_scale: float = 1.0  # largest; above 1 zooms out (the image shrinks inside padding)
    face_centred_prob: float = 0.8  # chance a crop is placed around a random face (else anywhere)
    min_visible_fraction: float = 0.5  # a face cut by the crop keeping less of its area is ignored
    # Chance a training sample is a mosaic of mosaic_tiles x mosaic_tiles augmented
    # images, each shrunk to its tile: more faces per step, and smaller (data/augment.py).
    mosaic_prob: float = 0.0
    mosaic_tiles: int = 2  # tiles per side of a mosaic: 2 (2x2) or 3 (3x3, faces a third the size)
    flip_prob: float = 0.5  # chance of a horizontal flip per training image
    jitter_prob: float = 0.5  # chance of each colour change: brightness, contrast, saturation, hue
    brightness_delta: float = 32.0  # brightness shift drawn from [-delta, delta], 0-255 scale
    contrast_min: float = 0.75  # smallest contrast factor (around mid-grey)
    contrast_max: float = 1.25  # largest contrast factor
    saturation_min: float = 0.7  # smallest factor on HSV saturation
    saturation_max: float = 1.3  # largest factor on HSV saturation
    # The default, +-16 degrees, keeps skin plausible.
    hue_delta: int = 8  # hue shift drawn from [-delta, delta], OpenCV units of 2 degrees
    skip_missing_images: bool = False  # drop listed-but-missing images instead of failing
    max_images: int = 0  # use at most this many training images (0 = all)
    # Images whose header claims more pixels are refused before decoding (data/image.py):
    # a 30000x30000 JPEG takes ~6 GB and 90 s to decode, and 65000x65000 crashes OpenCV.
    # 100 megapixels (300 MB decoded) passes the photos of nearly every camera; the 108
    # and 200 MP modes of some phones, and large panoramas, need a higher limit.
    max_image_pixels: int = MAX_IMAGE_PIXELS
    workers: int = 1  # PyDataset workers (0 or 1: batches made in the training thread)
    use_multiprocessing: bool = False  # PyDataset processes instead of threads
    seed: int = 1234  # 0 .. 2**32 - 1 (NumPy's seed range)

    # --- training -----------------------------------------------------------------------
    batch_size: int = 16  # images per step (per GPU under MirroredStrategy)
    head_epochs: int = 10  # stage 1: backbone frozen
    finetune_epochs: int = 20  # stage 2: whole network, lower learning rate
    learning_rate: float = 1e-3  # stage 1 (head) learning rate after warm-up
    finetune_learning_rate: float = 1e-4  # stage 2 (whole network) learning rate
    warmup_epochs: float = 1.0  # epochs of linear warm-up from 10% of each stage's rate
    lr_schedule: str = "constant"  # after warm-up: constant or cosine (to 1% at stage end)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    early_stopping_patience: int = 8  # 0 disables
    reduce_lr_patience: int = 3  # 0 disables; constant lr_schedule only
    reduce_lr_factor: float = 0.3  # ReduceLROnPlateau's factor, in (0, 1)
    monitor: str = "val_ap"  # metric that names and ranks checkpoints
    keep_best: int = 3  # checkpoints kept
    # Validate, save and ship a moving average of the weights (model/ema.py); 0 disables.
    ema_decay: float = 0.0
    # Train in float16 (mixed_float16), float32 output layer: for GPUs; on a CPU it is 26x
    # slower than float32 (benchmarks/bench_precision.py, docs/benchmarks.md).
    mixed_precision: bool = False
    # auto: MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else
    # MirroredStrategy when >1 GPU; mirrored: all local devices; multiworker: the TF_CONFIG
    # cluster (README, "Training on several machines"); none
    distribute: str = "auto"
    steps_per_epoch: int = 0  # 0 = one pass over the data; N = N batches of a fresh shuffle
    validation_steps: int = 0  # 0 = one pass over the validation data
    log_dir: str = "logs"  # TensorBoard logs go to <log_dir>/fit/<run>/
    checkpoint_dir: str = "checkpoints"  # checkpoints go to <checkpoint_dir>/<run>/
    run_name: str = ""  # empty = timestamp

    # --- loss ---------------------------------------------------------------------------
    focal_gamma: float = 2.0  # focal loss focusing exponent (0: plain cross-entropy)
    focal_alpha: float = 0.25  # weight of the positive (face) class in the focal term
    box_loss_weight: float = 5.0  # weight of the box term (GIoU + sqrt size) in the loss
    # The box term's overlap part: giou (1 - GIoU), diou (1 - IoU + centre distance^2 /
    # enclosing diagonal^2) or eiou (DIoU's + width and height gaps^2 / enclosing sides^2).
    box_iou_loss: str = "giou"
    objectness_loss_weight: float = 1.0  # weight of the focal objectness term
    # weight of the landmark term (smooth L1 on the five points; YuNet: 0.1) with landmarks
    landmark_loss_weight: float = 0.1
    # The landmark term per coordinate: smooth_l1, or wing (Feng et al. 2018: log-shaped
    # under a tenth of the face size, so small errors keep a large gradient).
    landmark_loss: str = "smooth_l1"
    # Face cells' score target is the IoU of their predicted box (quality focal loss).
    quality_scores: bool = False

    # --- detection ----------------------------------------------------------------------
    score_threshold: float = 0.5  # detections below this score are dropped (detect.py)
    eval_score_threshold: float = 0.02  # AP and the official protocol need the low scores too
    nms_iou: float = 0.4  # non-maximum suppression: IoU above which the lower box goes
    # per image; 0 = no cap. WIDER photos hold up to several hundred faces (the peers keep
    # 400 to 5,000), and AP counts the low-scored ones too.
    max_detections: int = 1000

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field whose value cannot work.

        Every field is checked for its type first (a config.json may hold "16" or null
        where a number belongs), then every numeric field against its rule in
        `_NUMERIC_RULES` (NaN and infinity fail every rule), then the rules that tie
        fields together.
        """
        for f in dataclasses.fields(self):
            check_type(f.name, str(f.type), getattr(self, f.name))
        for name, (rule, text) in _NUMERIC_RULES.items():
            value = getattr(self, name)
            if not rule(value):
                raise ConfigError(f"{name}={value!r}: {text}")
        self.grid_spec()  # the grid's own rules (data.grid.GridSpec)
        for low, high in _RANGES:
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(
                    f"{low}={getattr(self, low)!r}: must be <= {high}={getattr(self, high)!r}"
                )
        check_lr_schedule(self.lr_schedule)
        if self.distribute not in DISTRIBUTE_MODES:
            raise ConfigError(f"distribute={self.distribute!r}: must be one of "
                              f"{', '.join(DISTRIBUTE_MODES)}")
        if self.box_iou_loss not in BOX_IOU_LOSSES:
            raise ConfigError(f"box_iou_loss={self.box_iou_loss!r}: must be one of "
                              f"{', '.join(BOX_IOU_LOSSES)}")
        if self.landmark_loss not in LANDMARK_LOSSES:
            raise ConfigError(f"landmark_loss={self.landmark_loss!r}: must be one of "
                              f"{', '.join(LANDMARK_LOSSES)}")

    @property
    def cell_size(self) -> int:
        """Side of one grid cell in input pixels."""
        return self.input_size // self.grid_size

    def grid_spec(self) -> GridSpec:
        """The grid codec's, the network's and the contract's part of the configuration."""
        return GridSpec.from_config(self)

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "Config":
        """Build from a dict, rejecting unknown keys (a typo must not pass silently)."""
        if not isinstance(values, dict):
            kind = "null" if values is None else type(values).__name__
            raise ConfigError(f"{source}: expected a JSON object of config fields, got {kind}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config field(s): {', '.join(unknown)}")
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


def field_docs() -> dict:
    """Each Config field's comment in this file: its trailing comment, else the comment
    lines just above it. The one description of a field, shown by every CLI's --help."""
    import inspect

    docs, above = {}, []
    for line in inspect.getsource(Config).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if not stripped.startswith("# ---"):  # section rulers describe no field
                above.append(stripped.lstrip("#").strip())
            continue
        name, colon, rest = stripped.partition(":")
        if colon and name.isidentifier() and "=" in rest:
            _, hash_, comment = rest.partition("  # ")
            docs[name] = comment.strip() if hash_ else " ".join(above)
        above = []
    fields = {f.name for f in dataclasses.fields(Config)}
    return {name: doc for name, doc in docs.items() if name in fields}


def save_config(config: Config, path: str) -> None:
    """Write the configuration as JSON, atomically."""
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def load_config(path: str) -> Config:
    """Read a configuration written by `save_config`."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    return Config.from_dict(values, source=path)


# The file a run's configuration is saved in, in its checkpoint folder (model.training).
RUN_CONFIG_FILE = "config.json"


def run_config_beside(path: str) -> "Config | None":
    """The configuration of the run a checkpoint (or an export saved beside it) comes
    from: its folder's RUN_CONFIG_FILE, or None when the folder has none."""
    run_config = os.path.join(os.path.dirname(os.path.abspath(path)), RUN_CONFIG_FILE)
    return load_config(run_config) if os.path.isfile(run_config) else None


def demo_config(base: Config) -> Config:
    """The README's main job: train from scratch on the bundled demo data, on a CPU.

    No ImageNet weights (offline machines have none), so there is no frozen-backbone stage:
    the whole network trains from the start at a higher learning rate, decayed along a
    cosine to the end of its fixed budget (7.4 to 9.4 minutes of training on 2 CPU cores;
    the measured curve and the runs behind these choices are in docs/benchmarks.md).
    """
    return base.replace(
        dataset=DEMO_ROOT,
        backbone_weights="none",
        alpha=0.35,  # 3x faster steps than 0.75 on a CPU
        grid_size=14,  # 16-px cells: the small demo faces (median 22 px) localise better
        head_channels=64,  # enough for one class; the 3x3 head convolutions cost 4x less
        # The default 5 let the box term drown objectness: val_ap 0.12-0.29 after 2 epochs,
        # 0.29-0.71 with 1 or 2.
        box_loss_weight=1.0,
        head_epochs=0,
        finetune_epochs=5,  # 5 passes over the 3,000 demo scenes: 935 steps
        finetune_learning_rate=4e-3,  # 2e-3: val_ap 0.66 after 7.6 min (7x7 grid)
        lr_schedule="cosine",
        warmup_epochs=0.1,
        crop_prob=0.0,  # flips and colour jitter only: crops slowed learning in a short run
        workers=2,  # two loader threads beside the training step use both cores
        early_stopping_patience=0,
    )


def real_config(base: Config) -> Config:
    """Real photos on a small budget: the ImageNet MobileNetV2 1.0 at 320 px, 8-px cells.

    The recipe the real-photo benchmark (benchmarks/bench_real.py, docs/benchmarks.md)
    measured; the dataset stays the caller's (WIDER FACE by default). alpha 1.0 because it
    is the only width with ImageNet weights at hand; 8-px cells because real faces are
    small (median 22 px in the face-mask photos). One epoch with the backbone frozen lets
    the new head settle before the pretrained features are touched.
    """
    return base.replace(
        input_size=320,
        grid_size=40,
        alpha=1.0,
        # Up to 4 positive cells per face: val AP 0.64 -> 0.81, WIDER easy .24 -> .44 in
        # 500 steps (docs/benchmarks.md, runs A and B).
        neighbour_cells=True,
        # Crops up to 2x the short side (zoom out) so faces are also seen small, as in
        # WIDER: val AP 0.81 -> 0.84, WIDER easy .44 -> .49 (runs B and C).
        crop_max_scale=2.0,
        head_epochs=1,
        finetune_epochs=10,
        learning_rate=2e-3,
        finetune_learning_rate=1e-3,
        lr_schedule="cosine",
        warmup_epochs=0.3,
        workers=2,
        early_stopping_patience=0,
    )


def small_config(base: Config) -> Config:
    """Small faces, a fast network: `real` on the ImageNet MobileNetV2 0.35, a separable head
    and three grid levels (cells of 8, 16 and 32 px at 320).

    UltraFace-class cost (171 M multiply-adds at 320 px against `real`'s 1,405 M,
    `python print_model.py --input-size 320 --grid-size 40 --grid-levels 3 --alpha 0.35 --head-channels 64 --head-separable --neighbour-cells --backbone-weights none`): the 0.35 backbone
    (a fifth of alpha 1.0's weights) and 64-wide depthwise-separable 3x3 convolutions in
    the stride-8 neck and head, which cost more than the backbone when full.

    Measured (docs/benchmarks.md, "Small faces and a fast model"; 200 WIDER photos, official
    protocol, the peers in the same run, one CPU thread): 1,800 steps (65 min on 2 CPU
    cores, run L2) gave easy / medium / hard .448 / .335 / .138 at 12.4 ms (TFLite float16,
    320 px) against UltraFace's .706 / .569 / .375 at 8.8 ms and `real`'s shipped .494 /
    .280 / .096 at 4x UltraFace's time. Three levels beat one on validation (AP 0.547
    against 0.527 in the same 1,800 steps, run L1: .456 / .323 / .131 on the test photos).
    Weight EMA with quality scores scored lower on validation in 500 steps (0.366 against
    0.396) and is not part of it. With `--landmarks`, 8,600 steps (run LM4, 77 min on a
    faster 2-core machine): .553 / .424 / .187 at 9.6 ms against UltraFace's .706 / .569 /
    .375 at 7.0 ms. The same 8,600 steps with `--ema-decay 0.998` (runs E1, E2): .565 /
    .440 / .195; 5,000 more at half the rate (run E3): .565 / .450 / .205; 1,600 more at
    2e-4 with the wing landmark loss (run W1): .568 / .455 / .207, its box detector 6.0 ms
    against UltraFace's 5.4 in the same run. 8,000 more at 3e-4 (run W2): .576 / .463 /
    .214, its box detector 6.5 ms against UltraFace's 5.6. 1,200 more with
    `--quality-scores` (run Q1, the best checkpoint of 4,000 steps): .598 / .477 / .218,
    its box detector 5.8 ms against UltraFace's 5.4 (the same 4,000 steps without them, run
    Q0: .564 / .459 / .211), and on a 320x256 band .587 / .469 / .214 at 4.9 ms; W2's box
    detector is models/face_detector.tflite (Q1's, at its validated threshold, put two
    boxes on no face in the portrait of tests/test_shipped_model.py). W1's weights at a larger input (`export.py
    --input-size`, once resized networks kept their box sizes): .586 / .545 / .331 at 480
    px, 14.4 ms; on the band of a landscape photo's rows (`--input-height`) .582 / .528 /
    .319 at 480x320, 9.9 ms (W2: .592 / .537 / .327, 10.0 ms), and .553 / .474 / .245 at
    384x256 at the 320-px model's 6.5 ms.
    """
    return real_config(base).replace(
        alpha=0.35,
        head_channels=64,
        head_separable=True,
        grid_levels=3,  # val AP 0.527 -> 0.547 in 1,800 steps (runs L1, L2)
    )


# Named presets: `python train.py --preset NAME` starts from PRESETS[NAME](Config()).
PRESETS = {"demo": demo_config, "real": real_config, "small": small_config}
