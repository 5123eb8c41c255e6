"""Write any supported dataset out in the official WIDER FACE layout.

`convert_to_wider(records, OUT, split)` (what `python tools/convert.py` runs) writes

    OUT/WIDER_{split}/images/<event>/<file>       hard links to the input images (copies
                                                  with `copy`, or across file systems)
    OUT/wider_face_split/wider_face_{split}_bbx_gt.txt

so every WIDER tool (this project's reader, the official evaluation) reads it. Events:
images in the input's top folder go to `0--custom`; images in sub-folders to one event
per folder, numbered in name order (`alice/2.jpg` -> `1--alice/2.jpg`, `a/b/c.jpg` ->
`2--a_b/c.jpg`); names already shaped `<n>--<event>/<file>` are kept. Spaces in names
become `_`. Ignored faces are written with the `invalid` flag, so they read back ignored.

The whole input is converted into the one split named (a source with its own train / val
parts gives the part named); convert a validation folder with split='val' to add a val
split. The input is never written: the output may not lie inside the input, nor the
input inside the output. An existing, non-empty split is left alone unless `overwrite`
(which replaces its annotation file and same-named images; files of an
earlier conversion the new one does not list stay on disk, unlisted).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from typing import List, Sequence

from tqdm import tqdm

from data.formats import lies_inside  # noqa: F401 - convert.py imports it from here
from data.records import ImageRecord
from data.wider import wider_split_paths, write_wider_annotations
from common.errors import DatasetError
from common.files import atomic_path

DEFAULT_EVENT = "custom"
_WIDER_NAME = re.compile(r"^\d+--[^/]+/[^/]+$")


@dataclass
class ConvertResult:
    """What `convert_to_wider` wrote: the records as they now are (paths in the output)."""

    records: List[ImageRecord]
    images_dir: str
    annotation_path: str
    linked: int = 0
    copied: int = 0


def wider_names(names: Sequence[str]) -> List[str]:
    """`<event>/<file>` names for record names (module doc), unique, in the same order."""
    folders = sorted({os.path.dirname(n) for n in names if not _WIDER_NAME.match(n)})
    if "" in folders:  # top-level images first, as event 0
        folders.remove("")
        folders.insert(0, "")
    events = {
        folder: f"{k}--{_safe(folder.replace('/', '_')) if folder else DEFAULT_EVENT}"
        for k, folder in enumerate(folders)
    }
    out, used = [], set()
    for name in names:
        if _WIDER_NAME.match(name):
            new = _safe(name)
        else:
            new = f"{events[os.path.dirname(name)]}/{_safe(os.path.basename(name))}"
        stem, ext = os.path.splitext(new)
        k = 1
        while new in used:  # two names that differ only in spaces vs '_'
            new = f"{stem}_{k}{ext}"
            k += 1
        used.add(new)
        out.append(new)
    return out


def convert_to_wider(
    records: Sequence[ImageRecord],
    out_root: str,
    split: str = "train",
    overwrite: bool = False,
    copy: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Place the records' images and annotation file in the WIDER layout under `out_root`.

    Args:
        records: the dataset (any reader's records).
        out_root: the WIDER root to write (created if needed).
        split: 'train' or 'val': the split written.
        overwrite: write into a split that already has images or annotations.
        copy: copy images instead of hard-linking them (hard links fall back to copies
            when the output is on another file system).
        progress: show a tqdm bar.

    Raises:
        DatasetError: the split exists (without `overwrite`), or an input image lies in
            the output (it would be written over).
    """
    if split not in ("train", "val"):
        raise DatasetError(f"split={split!r}: the WIDER layout converts train or val")
    if not records:
        raise DatasetError(f"{out_root}: nothing to convert (no records)")
    images_dir, annotation_path = wider_split_paths(out_root, split)
    root_real = os.path.realpath(out_root)
    for record in records:
        if lies_inside(os.path.realpath(record.path), root_real):
            raise DatasetError(
                f"{out_root}: the input image {record.path} lies inside the output; "
                f"choose an output folder outside the input"
            )
    existing = os.path.isdir(images_dir) and any(os.scandir(images_dir))
    if (existing or os.path.exists(annotation_path)) and not overwrite:
        raise DatasetError(
            f"{out_root}: the {split} split already exists ({images_dir} or "
            f"{annotation_path}); overwrite=True replaces it"
        )

    names = wider_names([r.name for r in records])
    converted, linked, copied = [], 0, 0
    for record, name in tqdm(list(zip(records, names)), desc=f"convert -> WIDER_{split}",
                             unit="img", disable=not progress):
        dest = os.path.join(images_dir, *name.split("/"))
        if _place(record.path, dest, copy):
            linked += 1
        else:
            copied += 1
        converted.append(ImageRecord(
            path=dest, name=name, boxes=record.boxes.copy(), ignore=record.ignore.copy(),
            attributes=None if record.attributes is None else record.attributes.copy(),
        ))
    write_wider_annotations(converted, annotation_path)
    return ConvertResult(converted, images_dir, annotation_path, linked, copied)


def _safe(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip())


def _place(src: str, dest: str, copy: bool) -> bool:
    """Hard-link (True) or copy (False) `src` to `dest`, replacing `dest` atomically."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if not copy:
        tmp = os.path.join(os.path.dirname(dest), f".{uuid.uuid4().hex}.tmp")
        try:
            os.link(src, tmp)
            os.replace(tmp, dest)
            return True
        except OSError:  # another file system, or links not supported: copy instead
            if os.path.lexists(tmp):
                os.remove(tmp)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return False
