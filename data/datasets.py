"""Where the images come from: the one entry point `train.py` uses for data.

A *source* is a folder (or a COCO .json) in one of the formats:

    wider     the official WIDER FACE layout (WIDER_train/, WIDER_val/, wider_face_split/),
              also the layout of the demo set and of `python tools/convert.py` output
    labelme   one labelme .json per image          (data/formats/labelme.py)
    yolo      images/ + labels/ `class cx cy w h`  (data/formats/yolo.py)
    coco      one COCO .json                       (data/formats/coco.py)
    voc       one Pascal VOC .xml per image        (data/formats/voc.py)
    retinaface  one RetinaFace / SCRFD label.txt, `# relpath` + box and five points a face
              (data/formats/retinaface.py); the source is the file or a folder holding one

`--dataset-format auto` detects the format; a WIDER root is always recognised by its layout.
A folder with `annotations/*.xml` or `Annotations/*.xml` is VOC, and so, failing every other
format, is one with .xml files beside images of the same name. A .txt whose first line is a
`# relpath` header naming an image is a RetinaFace label file. A WIDER root with a known
landmark file beside its wider_face_split/ (data/wider.py) is WIDER, with those points.

Several sources mix with weights. The syntax of `--dataset`, `--val-dataset` and
`--negatives` is a comma-separated list of

    [FORMAT=]PATH[:WEIGHT]        e.g.  --dataset "data/WIDER:1,labelme=my_faces:3"

WEIGHT (default 1) is how many times each image of the source is used per epoch: 3 repeats
every image three times, 0.5 takes a seeded half, 0 leaves the source out. Repetition is
exact and deterministic for a seed (`mix_records`), so proportions are the weights times the
source sizes. FORMAT overrides `--dataset-format` for one source. Validation sources are
each used once (weights only choose sources: 0 leaves one out).

Splits. WIDER roots have train / val splits. A custom source has splits when it holds both
a train and a val part: sub-folders `train/` and `val/` (or `valid/`, `validation/`), YOLO's
`images/train` + `images/val` (RetinaFace: `train/label.txt` + `val/label.txt`), or COCO files named like `instances_train.json` +
`instances_val.json`. A custom source without both is one pool, split deterministically:
an image is in validation when a hash of (seed, its name) falls below VAL_FRACTION (10 %),
at least one image when the pool has two or more. The hash keeps the split stable when you
add images: photos captured later never move an old validation image into training.
With `--val-dataset`, its sources are used whole and the training pool is not split.

Face-free images (`--negatives FOLDER`) become records without boxes: all-background
samples that teach the detector what is not a face. They are added to training only.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from config import WIDER_ROOT, Config
from data.formats import LoadReport, load_json, record_name
from data.formats.coco import is_coco_file, read_coco
from data.formats.labelme import labelme_files, read_labelme
from data.formats.retinaface import is_retinaface_file, read_retinaface, retinaface_files
from data.formats.voc import LAYOUTS as VOC_LAYOUTS, read_voc, xml_files
from data.formats.yolo import CLASSES_FILE, read_yolo
from data.image import IMAGE_EXTENSIONS, image_files
from data.records import ImageRecord
from data.wider import SPLITS, load_wider_split, wider_split_paths
from common.errors import ConfigError, DatasetError, FaceDetectorError

FORMATS = ("wider", "labelme", "yolo", "coco", "voc", "retinaface")
# Folder (or COCO file name) spellings of each split.
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"),
               "test": ("test",)}
VAL_FRACTION = 0.1
# JSON files opened to tell labelme from COCO before giving up.
_DETECT_JSON = 5


@dataclass(frozen=True)
class Source:
    """One entry of a dataset spec: a path, its weight and its format ('auto' to detect)."""

    path: str
    weight: float = 1.0
    fmt: str = "auto"


def parse_sources(spec: str, default_format: str = "auto", what: str = "dataset") -> List[Source]:
    """Parse `[FORMAT=]PATH[:WEIGHT],...` (module doc) into Sources.

    A `:WEIGHT` suffix is taken only when it reads as a number, so `C:\\data` is a path.
    `what` names the Config field in errors (`dataset`, `val_dataset`, `negatives`).
    """
    _check_format(default_format, "dataset_format")
    sources = []
    for entry in str(spec).split(","):
        entry = entry.strip()
        if not entry:
            raise ConfigError(
                f"{what}={spec!r}: empty entry (expected [FORMAT=]PATH[:WEIGHT],...)"
            )
        fmt = default_format
        head, eq, rest = entry.partition("=")
        if eq and head.strip().lower() in FORMATS:
            fmt, entry = head.strip().lower(), rest.strip()
        path, weight = entry, 1.0
        base, colon, tail = entry.rpartition(":")
        if colon and base:
            try:
                weight = float(tail)
                path = base.strip()
            except ValueError:
                pass  # not a weight: the colon belongs to the path
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{what}={entry!r}: weight {tail} must be a number >= 0")
        if not path:
            raise ConfigError(f"{what}={entry!r}: no path")
        sources.append(Source(path, weight, fmt))
    return sources


def is_wider_root(path: str) -> bool:
    """Whether `path` has the official layout: wider_face_split/ and a WIDER_* folder."""
    return os.path.isdir(os.path.join(path, "wider_face_split")) and any(
        name.startswith("WIDER_") and os.path.isdir(os.path.join(path, name))
        for name in os.listdir(path)
    )


def detect_format(path: str) -> str:
    """The format of a source: one of FORMATS (DatasetError if unknown).

    In order: WIDER layout, labelme / COCO .json, VOC annotation folder, RetinaFace label
    file (in the folder or its train/ / val/), YOLO labels, .xml beside images (VOC). VOC's
    folders come before YOLO because darknet's voc_label.py writes YOLO labels/ into VOC
    folders whose images YOLO's rule cannot pair with them; a RetinaFace label.txt comes
    before YOLO because a YOLO folder may hold a stray .txt, never one of `# relpath` headers.
    """
    _check_exists(path)
    if os.path.isfile(path):
        if path.lower().endswith(".json"):
            load_json(path)  # AnnotationError naming the file if it cannot be parsed
            if is_coco_file(path):
                return "coco"
        if is_retinaface_file(path):
            return "retinaface"
        raise DatasetError(f"{path}: not a dataset folder, COCO .json or RetinaFace label file")
    if is_wider_root(path):
        return "wider"
    shallow = [
        os.path.join(where, f)
        for where in (path, os.path.join(path, "annotations")) if os.path.isdir(where)
        for f in sorted(os.listdir(where)) if f.lower().endswith(".json")
    ]
    for json_path in shallow[:_DETECT_JSON] + labelme_files(path)[:_DETECT_JSON]:
        kind = _json_kind(json_path)
        if kind:
            return kind
    if _has_voc_folder(path):
        return "voc"
    if any(retinaface_files(where) for where in _voc_candidates(path)):
        return "retinaface"
    if _has_yolo_labels(path):
        return "yolo"
    if _has_xml_beside_images(path):
        return "voc"
    broken = _unreadable_json(path)
    raise DatasetError(
        f"{path}: cannot tell the dataset format (no wider_face_split/, no labelme or COCO "
        f".json, no VOC annotations/*.xml, no RetinaFace label .txt, no YOLO labels/*.txt); "
        f"name it with dataset_format"
        + (f"; a .json was refused: {broken}" if broken else "")
    )


class LoadedSource(NamedTuple):
    """One split of one source as read.

    Attributes:
        records: the ImageRecords.
        format: the format read (one of FORMATS).
        missing_images: annotated images left out because the file is missing (WIDER with
            skip_missing, custom formats always); counted over the source's whole pool.
        report: the custom reader's LoadReport (None for WIDER).
    """

    records: List[ImageRecord]
    format: str
    missing_images: int
    report: Optional[LoadReport]


def load_records(
    source: str,
    split: str = "train",
    fmt: str = "auto",
    skip_missing: bool = False,
    *,
    seed: int = Config.seed,
    labels=None,
    holdout: bool = True,
    max_pixels: Optional[int] = None,
) -> List[ImageRecord]:
    """The records of one split of one source, in any supported format.

    Args:
        source: a WIDER root, a labelme / YOLO / VOC folder, a COCO folder or .json.
        split: 'train', 'val' or 'test' (WIDER test: no boxes).
        fmt: 'auto' or one of FORMATS; a WIDER root is read as WIDER whatever this says.
        skip_missing: WIDER: leave out listed images missing on disk instead of failing.
            Custom formats always report such annotations and leave them out.
        seed: seeds the hold-out split of a source without splits.
        labels: labels / classes / categories read as faces in custom formats
            (comma string or iterable; None or '' = the reader's default).
        holdout: split a source without splits 90 / 10 into train / val (module doc);
            False reads its whole pool for any split (a `--val-dataset`, conversion).
        max_pixels: Config.max_image_pixels; YOLO images whose header claims more are
            reported and left out (their boxes cannot be scaled). None: its default.

    Returns:
        ImageRecords (boxes (N, 4) float32 x1, y1, x2, y2 pixels of each image file).
        Bad entries of custom formats are left out and summarised in one
        AnnotationWarning.
    """
    return read_source(
        source, split, fmt, skip_missing, seed=seed, labels=labels, holdout=holdout,
        max_pixels=max_pixels,
    ).records


def read_source(
    source: str,
    split: str = "train",
    fmt: str = "auto",
    skip_missing: bool = False,
    *,
    seed: int = Config.seed,
    labels=None,
    holdout: bool = True,
    max_pixels: Optional[int] = None,
) -> LoadedSource:
    """`load_records` with what was left out: the format read and the missing-image count."""
    _check_format(fmt, "dataset_format")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: must be one of {', '.join(SPLITS)}")
    _check_exists(source)
    if fmt == "wider" or (os.path.isdir(source) and is_wider_root(source)):
        if holdout and split in ("train", "val") and _train_split_only(source):
            # A WIDER-layout set with a train split alone (a converted or third-party set)
            # is one pool, split by the same seeded hash as a custom source.
            wider = load_wider_split(source, "train", skip_missing)
            records = holdout_split(wider.records, split, seed)
            return LoadedSource(records, "wider", wider.skipped_images, None)
        _check_wider_split(source, split)
        wider = load_wider_split(source, split, skip_missing)
        return LoadedSource(wider.records, "wider", wider.skipped_images, None)
    if fmt == "auto":
        fmt = detect_format(source)

    if split == "test":
        path = _find_split(source, fmt, "test")
        if path is None:
            raise DatasetError(f"{source}: no test split (expected a test/ folder)")
        return _read_custom(path, fmt, labels, max_pixels)
    train_path = _find_split(source, fmt, "train")
    val_path = _find_split(source, fmt, "val")
    if train_path and val_path:
        return _read_custom(train_path if split == "train" else val_path, fmt, labels, max_pixels)
    loaded = _read_custom(train_path or val_path or source, fmt, labels, max_pixels)
    if not holdout:
        return loaded
    return loaded._replace(records=holdout_split(loaded.records, split, seed))


def holdout_split(
    records: Sequence[ImageRecord], split: str, seed: int, fraction: float = VAL_FRACTION
) -> List[ImageRecord]:
    """The train or val part of a pool, chosen by a seeded hash of each record's name.

    An image is in val when hash(seed, name) < fraction; when that picks none of a pool of
    two or more, the image with the smallest hash is val. Order is kept.
    """
    if split not in ("train", "val"):
        raise ConfigError(f"split={split!r}: a hold-out split is 'train' or 'val'")
    keys = np.array([_hash01(seed, r.name) for r in records], np.float64)
    in_val = keys < fraction
    if len(records) >= 2 and fraction > 0 and not in_val.any():
        in_val[int(np.argmin(keys))] = True
    want = split == "val"
    return [r for r, v in zip(records, in_val) if bool(v) == want]


def mix_records(
    groups: Sequence[Tuple[Sequence[ImageRecord], float]], seed: int, epoch: int = 0
) -> List[ImageRecord]:
    """Concatenate groups of records, each repeated by its weight.

    A group of n records with weight w contributes floor(w) copies of every record plus a
    seeded sample (without replacement) of round(frac(w) * n) records, drawn from
    (seed, epoch, group index): the same arguments give the same list; a caller wanting a
    fresh fractional sample each epoch passes the epoch.
    """
    mixed = []
    for k, (records, weight) in enumerate(groups):
        records = list(records)
        if weight < 0 or not math.isfinite(weight):
            raise ConfigError(f"weight {weight}: must be a number >= 0")
        whole = int(math.floor(weight))
        mixed.extend(records * whole)
        extra = int(round((weight - whole) * len(records)))
        if extra:
            rng = np.random.default_rng([seed, epoch, k])
            mixed.extend(records[i] for i in np.sort(rng.choice(len(records), extra, replace=False)))
    return mixed


def load_negatives(folder: str) -> List[ImageRecord]:
    """Records without faces, one per image under `folder` (recursive): all background."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: negatives folder not found")
    files = image_files(folder)
    if not files:
        raise DatasetError(
            f"{folder}: no images in the negatives folder (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return [ImageRecord(path=path, name=record_name(path, folder)) for path in files]


def training_records(config: Config) -> List[ImageRecord]:
    """The training records the configuration asks for.

    Reads Config.dataset (sources with weights), dataset_format, face_labels, negatives,
    skip_missing_images, seed, and keeps at most max_images (a seeded sample) when set.
    """
    groups = []
    for source in parse_sources(config.dataset, config.dataset_format, "dataset"):
        if source.weight > 0:
            groups.append((_load(source, "train", config, holdout=True), source.weight))
    if config.negatives:
        for source in parse_sources(config.negatives, "auto", "negatives"):
            if source.weight > 0:
                groups.append((load_negatives(source.path), source.weight))
    records = mix_records(groups, config.seed)
    if config.max_images and len(records) > config.max_images:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(len(records), config.max_images, replace=False))
        records = [records[i] for i in keep]
    if not records:
        raise DatasetError(f"dataset={config.dataset!r}: no training images")
    return records


def validation_records(config: Config) -> List[ImageRecord]:
    """The validation records: Config.val_dataset's sources whole, or the val split of
    each Config.dataset source (its WIDER val split, val folder or 10 % hold-out)."""
    explicit = bool(config.val_dataset)
    spec = config.val_dataset or config.dataset
    what = "val_dataset" if explicit else "dataset"
    records = []
    for source in parse_sources(spec, config.dataset_format, what):
        if source.weight > 0:
            records.extend(_load(source, "val", config, holdout=not explicit))
    if not records:
        raise DatasetError(
            f"{what}={spec!r}: no validation images (a source without a val split keeps "
            f"{VAL_FRACTION:.0%} of its images for validation: add images or set val_dataset)"
        )
    return records


# --- helpers -------------------------------------------------------------------------------


def _load(source: Source, split: str, config: Config, holdout: bool) -> List[ImageRecord]:
    return load_records(
        source.path, split, source.fmt, config.skip_missing_images,
        seed=config.seed, labels=config.face_labels or None, holdout=holdout,
        max_pixels=config.max_image_pixels,
    )


def _check_format(fmt: str, what: str) -> None:
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"{what}={fmt!r}: must be auto or one of {', '.join(FORMATS)}")


def _check_exists(path: str) -> None:
    if os.path.exists(path):
        return
    if os.path.abspath(path) == os.path.abspath(WIDER_ROOT):
        raise DatasetError(
            f"{path}: WIDER FACE not found; run `python tools/download.py` to fetch it, "
            f"or train on the demo data with `python train.py --demo`"
        )
    raise DatasetError(
        f"{path}: dataset not found; pass a WIDER FACE root (`python tools/download.py` fetches "
        "one), a labelme/YOLO/COCO/VOC folder, a RetinaFace label file, or train on the demo data with "
        "`python train.py --demo`"
    )


def _hash01(seed: int, name: str) -> float:
    """A stable pseudo-random number in [0, 1) from (seed, name) (not Python's salted hash)."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def _json_kind(path: str) -> Optional[str]:
    try:
        # The readers' own loader: a deeply nested or huge-integer file is no traceback.
        data = load_json(path)
    except (OSError, FaceDetectorError):
        return None
    if isinstance(data, dict) and "shapes" in data:
        return "labelme"
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return "coco"
    return None


def _unreadable_json(folder: str) -> Optional[str]:
    """The one-line error of the first .json in `folder` or its annotations/ that
    `load_json` refuses (invalid, not UTF-8, nested too deep), or None."""
    for where in (folder, os.path.join(folder, "annotations")):
        if not os.path.isdir(where):
            continue
        for f in sorted(os.listdir(where)):
            if f.lower().endswith(".json"):
                try:
                    load_json(os.path.join(where, f))
                except FaceDetectorError as e:
                    return str(e)
                except OSError:
                    continue
    return None


def _coco_files(folder: str) -> list:
    """COCO .json files in `folder` or its annotations/ (not deeper)."""
    found = []
    for where in (folder, os.path.join(folder, "annotations")):
        if os.path.isdir(where):
            found.extend(
                os.path.join(where, f) for f in sorted(os.listdir(where))
                if f.lower().endswith(".json") and is_coco_file(os.path.join(where, f))
            )
    return found


def _voc_candidates(folder: str) -> list:
    """`folder` and its split sub-folders (train/, val/, ...): where a VOC layout may be."""
    splits = [os.path.join(folder, name) for names in SPLIT_NAMES.values() for name in names]
    return [folder] + [s for s in splits if os.path.isdir(s)]


def _has_voc_folder(folder: str) -> bool:
    """An annotations/ or Annotations/ folder holding .xml files, in `folder` or a split."""
    for where in _voc_candidates(folder):
        if any(xml_files(os.path.join(where, annotation_dir)) for annotation_dir, _ in VOC_LAYOUTS):
            return True
    return False


def _has_xml_beside_images(folder: str) -> bool:
    """An .xml beside an image of the same name (LabelImg's layout), in `folder` or a split."""
    for where in _voc_candidates(folder):
        files = os.listdir(where)
        xml = {os.path.splitext(f)[0] for f in files if f.lower().endswith(".xml")}
        if any(os.path.splitext(f)[0] in xml for f in files if f.lower().endswith(IMAGE_EXTENSIONS)):
            return True
    return False


def _has_yolo_labels(folder: str) -> bool:
    """A .txt under a labels/ folder, a classes.txt, or a .txt beside an image of its name."""
    for root, _, files in os.walk(folder):
        if CLASSES_FILE in files:
            return True
        txt = {os.path.splitext(f)[0] for f in files if f.lower().endswith(".txt")}
        if not txt:
            continue
        if "labels" in os.path.relpath(root, folder).split(os.sep):
            return True
        if any(os.path.splitext(f)[0] in txt for f in files if f.lower().endswith(IMAGE_EXTENSIONS)):
            return True
    return False


def _find_split(root: str, fmt: str, split: str) -> Optional[str]:
    """The folder (or COCO file) holding `split` of a custom source, or None."""
    if not os.path.isdir(root):
        return None
    names = SPLIT_NAMES[split]
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
        if fmt == "yolo" and os.path.isdir(os.path.join(root, "images", name)):
            return os.path.join(root, "images", name)
    if fmt == "coco":
        for path in _coco_files(root):
            tokens = os.path.splitext(os.path.basename(path))[0].lower().replace("-", "_").split("_")
            if any(t.startswith(name) for t in tokens for name in names):
                return path
    return None


def _read_custom(path: str, fmt: str, labels, max_pixels: Optional[int] = None) -> LoadedSource:
    """Read a labelme / YOLO / COCO / VOC / RetinaFace source, emit its report, fail if
    nothing is usable."""
    if fmt == "labelme":
        result = read_labelme(path, labels)
    elif fmt == "yolo":
        result = read_yolo(path, labels, max_pixels)
    elif fmt == "coco":
        result = read_coco(_coco_file(path), categories=labels)
    elif fmt == "voc":
        result = read_voc(path, labels)
    elif fmt == "retinaface":
        result = read_retinaface(_retinaface_file(path))
    else:
        raise ConfigError(f"dataset_format={fmt!r}: must be auto or one of {', '.join(FORMATS)}")
    result.report.emit()
    if not result.records:
        first = f"; first problem: {result.report.messages[0]}" if result.report.messages else ""
        raise DatasetError(f"{path}: no usable {fmt} annotations found{first}")
    return LoadedSource(result.records, fmt, result.report.missing_images, result.report)


def _train_split_only(root: str) -> bool:
    """Whether a WIDER-layout root (not the official download) has a train split, no val."""
    if os.path.abspath(root) == os.path.abspath(WIDER_ROOT):
        return False  # the official download: a missing val split means an unfinished download
    return (os.path.exists(wider_split_paths(root, "train")[1])
            and not os.path.exists(wider_split_paths(root, "val")[1]))


def _check_wider_split(root: str, split: str) -> None:
    """A clear error for a WIDER-layout root (e.g. converted) that lacks the split asked."""
    _, annotation_path = wider_split_paths(root, split)
    if os.path.exists(annotation_path) or os.path.abspath(root) == os.path.abspath(WIDER_ROOT):
        return  # present, or the official download: load_wider_split says how to fetch it
    if split == "val":
        raise DatasetError(
            f"{root}: no val split ({annotation_path} not found); convert one with "
            f"`python tools/convert.py --split val --out {root} ...`, or set val_dataset"
        )
    raise DatasetError(f"{root}: no {split} split ({annotation_path} not found)")


def _retinaface_file(path: str) -> str:
    """The RetinaFace label file of a source: the file itself, or the one in the folder."""
    if os.path.isfile(path):
        return path
    files = retinaface_files(path)
    if len(files) != 1:
        found = ", ".join(os.path.basename(f) for f in files) or "none"
        raise DatasetError(
            f"{path}: expected one RetinaFace label .txt ('# relpath' headers) in the folder, "
            f"found {found}; give the file as the source"
        )
    return files[0]


def _coco_file(path: str) -> str:
    if os.path.isfile(path):
        return path
    files = _coco_files(path)
    if not files:
        broken = _unreadable_json(path)
        if broken:  # a COCO file json cannot parse (50,000 levels deep...): say why
            raise DatasetError(f"{path}: no usable COCO .json: {broken}")
    if len(files) != 1:
        found = ", ".join(os.path.basename(f) for f in files) or "none"
        raise DatasetError(
            f"{path}: expected one COCO .json in the folder or its annotations/, found {found}; "
            f"give the file as the source"
        )
    return files[0]
