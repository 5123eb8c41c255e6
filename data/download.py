"""Fetch the official WIDER FACE archives and unpack them into the layout `train.py` reads.

`download_wider` (what `python tools/download.py` runs) leaves under the root (default
`config.WIDER_ROOT`):

    WIDER_train/images/<event>/*.jpg     WIDER_val/images/...     WIDER_test/images/...
    wider_face_split/wider_face_{train,val}_bbx_gt.txt, wider_face_test_filelist.txt

Each archive is fetched from the mirrors in order (a mirror is a base URL the file name is
appended to; `file://` folders work too). A download goes to `NAME.part`, resumes with an
HTTP Range request when run again, and is renamed to `NAME` only once complete and
verified. A part whose directory already exists is skipped.

Checksums: `ARCHIVES` holds the sizes and SHA-256 of the official archives as published
by torchvision's WIDERFace dataset and by the official page's Hugging Face copy. A file is
verified only when a SHA-256 is known for it: from `ARCHIVES`, a checksum manifest
(`sha256sum` format) or a `NAME=HEX` override; an override of None turns verification off
(for a mirror that repackaged an archive). A mirror whose file fails verification is
treated as not answering and the next one is tried.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from tqdm import tqdm

from config import WIDER_ROOT
from common.errors import ConfigError, DownloadError

OFFICIAL_PAGE = "http://shuoyang1213.me/WIDERFACE/"
USER_AGENT = "face-detector-download/1.0 (python urllib)"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One official archive: its file name, the directory it unpacks to, what is known of it."""

    part: str
    filename: str
    directory: str  # top-level directory inside the zip, created under the root
    size: Optional[int]  # bytes, for the progress bar when the server sends no length
    sha256: Optional[str]  # None: not verified unless a checksum is supplied
    urls: tuple = ()  # direct links tried after the default mirrors


ARCHIVES: Dict[str, Archive] = {
    a.part: a
    for a in (
        Archive("train", "WIDER_train.zip", "WIDER_train", 1465602149,
                "e23b76129c825cafae8be944f65310b2e1ba1c76885afe732f179c41e5ed6d59"),
        Archive("val", "WIDER_val.zip", "WIDER_val", 362752168,
                "f9efbd09f28c5d2d884be8c0eaef3967158c866a593fc36ab0413e4b2a58a17a"),
        Archive("test", "WIDER_test.zip", "WIDER_test", 1844140520,
                "3b0313e11ea292ec58894b47ac4c0503b230e12540330845d70a7798241f88d3"),
        Archive("annotations", "wider_face_split.zip", "wider_face_split", 3591642,
                "c7561e4f5e7a118c249e0a5c5c902b0de90bbf120d7da9fa28d99041f68a8a5c",
                urls=(OFFICIAL_PAGE + "support/bbx_annotation/wider_face_split.zip",)),
    )
}
PARTS = tuple(ARCHIVES)
# The test images have no public ground truth; fetch them only when asked.
DEFAULT_PARTS = ("train", "val", "annotations")
# Google-Drive-free copies, in the order tried. The official page links its image archives
# to the Hugging Face repository (CUHK-CSE/wider_face, formerly wider_face); PaddlePaddle's
# mirror holds train, val and a repackaged annotations zip (other checksum, so it is last).
DEFAULT_MIRRORS = (
    "https://huggingface.co/datasets/CUHK-CSE/wider_face/resolve/main/data/",
    "https://huggingface.co/datasets/wider_face/resolve/main/data/",
    "https://dataset.bj.bcebos.com/wider_face/",
)


@dataclass
class PartResult:
    """What `download_wider` did for one part: action is 'present' or 'unpacked'."""

    part: str
    directory: str
    action: str


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(error: BaseException) -> str:
    """A short one-line reason for a failed request."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, BaseException):
            return " ".join(str(error.reason).split())
        error = error.reason
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _content_range_total(value: Optional[str]) -> Optional[int]:
    """N of a `Content-Range: bytes a-b/N` or `bytes */N` header."""
    match = re.search(r"/(\d+)\s*$", value or "")
    return int(match.group(1)) if match else None


def _content_range_start(value: Optional[str]) -> Optional[int]:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def download_file(url: str, dest: str, sha256: Optional[str] = None, progress: bool = True,
                  timeout: float = 30.0, size_hint: Optional[int] = None) -> str:
    """Download `url` to `dest` through `dest.part`, resuming a partial `.part` with Range.

    The `.part` file is renamed to `dest` only when complete and, if `sha256` is given,
    verified; on a checksum mismatch it is deleted (no file left) and DownloadError raised.
    A transfer cut short keeps the `.part` so the next call resumes it. Returns `dest`.
    """
    part = dest + ".part"
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing after `offset`: the .part is complete (cut before its rename) or too long.
            total = _content_range_total(e.headers.get("Content-Range"))
            e.close()
            if total == offset:
                return _finish(part, dest, url, sha256)
            os.remove(part)
            return download_file(url, dest, sha256, progress, timeout, size_hint)
        raise DownloadError(f"{url}: {_reason(e)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"{url}: {_reason(e)}") from None

    with response:
        resumed = (offset > 0 and response.status == 206
                   and _content_range_start(response.headers.get("Content-Range")) == offset)
        if not resumed:
            offset = 0  # the server sent the whole file (no Range support): start over
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = offset + length if length is not None else size_hint
        received = 0
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        try:
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=os.path.basename(dest), disable=not progress, leave=False,
            ) as bar:
                while True:
                    block = response.read(CHUNK_BYTES)
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(
                f"{url}: transfer interrupted after {offset + received} bytes ({_reason(e)}); "
                f"{part} is kept, run again to resume"
            ) from None
    if length is not None and received < length:
        raise DownloadError(
            f"{url}: connection closed after {offset + received} of {offset + length} bytes; "
            f"{part} is kept, run again to resume"
        )
    return _finish(part, dest, url, sha256)


def _finish(part: str, dest: str, url: str, sha256: Optional[str]) -> str:
    """Verify the complete `.part` (when a checksum is known) and rename it to `dest`."""
    if sha256:
        actual = sha256_file(part)
        if actual != sha256.lower():
            os.remove(part)
            raise DownloadError(
                f"{url}: sha256 mismatch for {os.path.basename(dest)} (got {actual}, "
                f"expected {sha256.lower()}); the download was deleted"
            )
    os.replace(part, dest)
    return dest


def unpack_archive(zip_path: str, root: str, directory: str, progress: bool = True) -> str:
    """Unzip into `root/directory`, atomically: a half-unpacked tree never takes that name.

    The official zips hold `directory/` at their top; a zip without it is unpacked as the
    directory's content. Returns `root/directory`.
    """
    target = os.path.join(root, directory)
    staging = os.path.join(root, f".{directory}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            for member in tqdm(members, desc=f"unpack {os.path.basename(zip_path)}",
                               unit="file", disable=not progress, leave=False):
                archive.extract(member, staging)  # zipfile drops absolute and '..' parts
        unpacked = os.path.join(staging, directory)
        os.replace(unpacked if os.path.isdir(unpacked) else staging, target)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise DownloadError(f"{zip_path}: not a valid zip archive ({e}); delete it and run again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_checksum_manifest(path: str) -> Dict[str, str]:
    """{file name: sha256} from a `sha256sum`-style file (`HEX  NAME` lines, # comments)."""
    checksums = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: checksum manifest not found") from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64})\s+\*?(.+)", text)
        if not match:
            raise ConfigError(f"{path}:{number}: expected 'SHA256  FILENAME', got {text!r}")
        checksums[os.path.basename(match.group(2).strip())] = match.group(1).lower()
    return checksums


def parse_checksum_overrides(values: Iterable[str]) -> Dict[str, str]:
    """{name: sha256} from `NAME=HEX` strings (file or part name, 64 hex digits)."""
    checksums = {}
    for value in values:
        name, _, digest = value.partition("=")
        if not name or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ConfigError(f"sha256={value!r}: expected NAME=HEX with a 64-digit SHA-256")
        checksums[name] = digest.lower()
    return checksums


def _archive_sha256(archive: Archive, checksums: Optional[Dict[str, Optional[str]]]) -> Optional[str]:
    """The checksum to verify: an override by file or part name, else the table's."""
    for key in (archive.filename, archive.part):
        if checksums and key in checksums:
            return checksums[key]
    return archive.sha256


def _fetch(archive: Archive, root: str, urls: Sequence[str], sha256: Optional[str],
           progress: bool, timeout: float) -> str:
    """Download the archive from the first URL that delivers it (verified); else DownloadError."""
    dest = os.path.join(root, archive.filename)
    if os.path.exists(dest):
        if not sha256 or sha256_file(dest) == sha256:
            return dest
        os.remove(dest)  # a stale or corrupt archive from an earlier run
    failures = []
    for url in urls:
        try:
            return download_file(url, dest, sha256, progress, timeout, archive.size)
        except DownloadError as e:
            reason = str(e)
            failures.append(f"{url} ({reason[len(url) + 2:] if reason.startswith(url) else reason})")
    raise DownloadError(
        f"could not download {archive.filename}: tried {'; '.join(failures) or 'no URL'}; "
        f"download it manually from {OFFICIAL_PAGE} and unzip it into {root}, "
        f"or give a mirror that holds it (mirrors=[URL])"
    )


def download_wider(root: str = WIDER_ROOT, parts: Iterable[str] = DEFAULT_PARTS,
                   mirrors: Optional[Sequence[str]] = None,
                   checksums: Optional[Dict[str, Optional[str]]] = None,
                   progress: bool = True, keep_archives: bool = False,
                   timeout: float = 30.0) -> List[PartResult]:
    """Fetch and unpack the WIDER FACE parts ('train', 'val', 'test', 'annotations').

    mirrors: base URLs tried in order (None: DEFAULT_MIRRORS, then the official direct
        links); given mirrors are the only sources used.
    checksums: {file or part name: sha256 or None} overriding the table in ARCHIVES.
    A part whose directory exists under `root` is left as it is. The zip is deleted after
    unpacking unless `keep_archives`.
    """
    parts = list(dict.fromkeys(parts))
    unknown = [p for p in parts if p not in ARCHIVES]
    if unknown:
        raise ConfigError(f"parts={parts!r}: unknown {', '.join(map(repr, unknown))}; "
                          f"choose from {', '.join(PARTS)}")
    results = []
    for part in parts:
        archive = ARCHIVES[part]
        target = os.path.join(root, archive.directory)
        if os.path.isdir(target):
            results.append(PartResult(part, target, "present"))
            continue
        bases = DEFAULT_MIRRORS if mirrors is None else mirrors
        urls = [base.rstrip("/") + "/" + archive.filename for base in bases]
        if mirrors is None:
            urls += list(archive.urls)
        zip_path = _fetch(archive, root, urls, _archive_sha256(archive, checksums), progress, timeout)
        unpack_archive(zip_path, root, archive.directory, progress)
        if not keep_archives:
            os.remove(zip_path)
        results.append(PartResult(part, target, "unpacked"))
    return results
