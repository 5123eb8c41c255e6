"""Collect photos for your own face set from a camera, or a video file standing in for one.

`capture_frames` (what `python tools/capture.py` runs) saves one frame every `interval` seconds
(camera: wall-clock time; video file: the frames' timestamps, frame index / fps, so a
file is sampled the same however fast it decodes) up to `count` frames, as
`img_0001.jpg`, `img_0002.jpg`, ... Numbering continues after the highest existing
number in the folder, and a file is never written over (each JPEG is written to a
temporary file and hard-linked to its name, which fails instead of replacing). Ctrl-C
stops a camera capture and keeps what was saved. `preview` shows the frames in a window
(q or Esc stops). Next, label the folder with labelme:
`labelme my_faces --labels face --nodata --autosave` (one rectangle per face).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Union

import cv2
import numpy as np
from tqdm import tqdm

from common.errors import ConfigError, ImageError

DEFAULT_PREFIX = "img"
JPEG_QUALITY = 95
# Frame timestamps within this of a save time count as reaching it (frame_index / fps
# is not exact in floating point).
_EPSILON = 1e-6
_QUIT_KEYS = (ord("q"), 27)


@dataclass
class CaptureResult:
    """The files written, in order, and how the capture ended."""

    saved: List[str] = field(default_factory=list)
    frames_read: int = 0
    stopped: str = "count"  # 'count', 'end of video', 'interrupted', 'quit', 'read failed'


def frame_name(prefix: str, index: int) -> str:
    return f"{prefix}_{index:04d}.jpg"


def next_index(folder: str, prefix: str = DEFAULT_PREFIX) -> int:
    """1 + the highest number of `<prefix>_<number>.jpg` files in `folder` (1 if none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.jpe?g$", re.IGNORECASE)
    numbers = [int(m.group(1)) for f in (os.listdir(folder) if os.path.isdir(folder) else [])
               if (m := pattern.match(f))]
    return max(numbers, default=0) + 1


def write_new_jpeg(path: str, image: np.ndarray, quality: int = JPEG_QUALITY) -> bool:
    """Write `image` as a JPEG at `path` unless a file is there: True if written.

    The bytes go to a temporary file first, then a hard link gives them their name: the
    link fails if the name exists, so nothing is ever replaced, and a crash never leaves a
    half-written JPEG under the name.
    """
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError(f"{path}: cannot encode the frame as JPEG")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".capture.", suffix=".tmp.jpg", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: exclusive create instead
            try:
                with open(path, "xb") as f:
                    f.write(data.tobytes())
            except FileExistsError:
                return False
        return True
    finally:
        os.remove(tmp)


def open_capture(source: Union[int, str]) -> cv2.VideoCapture:
    """cv2.VideoCapture of a camera index or a video file; ImageError if it cannot open."""
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise ImageError(f"{source}: video file not found")
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise ImageError(f"{source}: cannot open as a video (unsupported or corrupt)")
        return capture
    capture = cv2.VideoCapture(int(source))
    if not capture.isOpened():
        raise ImageError(f"camera {source}: cannot open (no such camera, or in use)")
    return capture


def capture_frames(
    source: Union[int, str],
    out: str,
    interval: float = 1.0,
    count: int = 50,
    prefix: str = DEFAULT_PREFIX,
    preview: bool = False,
    quality: int = JPEG_QUALITY,
    progress: bool = True,
) -> CaptureResult:
    """Save a frame every `interval` seconds from a camera (int) or video file (str).

    Args:
        source: camera index for cv2.VideoCapture, or a video file path.
        out: folder for the JPEGs (created if needed).
        interval: seconds between saved frames (0 saves every frame).
        count: frames to save; 0 means until the video ends (or Ctrl-C / q).
        prefix: file names are `<prefix>_<number>.jpg`, numbered after existing ones.
        preview: show the frames in a window (needs a display).
        quality: JPEG quality.
        progress: show a tqdm bar.

    Returns:
        CaptureResult with the saved paths in order.
    """
    _check_capture_arguments(out, interval, count, prefix)
    is_file = isinstance(source, str)
    capture = open_capture(source)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:  # a file on the way (a/b with a a file), a read-only parent...
        capture.release()
        raise ConfigError(f"out={out!r}: cannot create the folder ({e.strerror})") from None
    fps = capture.get(cv2.CAP_PROP_FPS) if is_file else 0.0
    result = CaptureResult()
    index = next_index(out, prefix)
    next_time = 0.0
    start = time.monotonic()
    bar = tqdm(total=count or None, desc="capture", unit="frame", disable=not progress)
    try:
        while count == 0 or len(result.saved) < count:
            ok, frame = capture.read()
            if not ok or frame is None:
                result.stopped = "end of video" if is_file else "read failed"
                break
            t = _frame_time(capture, result.frames_read, fps) if is_file else (
                time.monotonic() - start)
            result.frames_read += 1
            if t + _EPSILON >= next_time:
                path, index = _save_new_frame(frame, out, prefix, index, quality)
                result.saved.append(path)
                bar.update(1)
                next_time += interval
                while interval > 0 and next_time <= t + _EPSILON:  # slow source: no burst
                    next_time += interval
            if preview:
                cv2.imshow("capture (q to stop)", frame)
                if cv2.waitKey(1) & 0xFF in _QUIT_KEYS:
                    result.stopped = "quit"
                    break
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    finally:
        bar.close()
        capture.release()
        if preview:
            cv2.destroyAllWindows()
    return result


def _check_capture_arguments(out: str, interval: float, count: int, prefix: str) -> None:
    """ConfigError naming the first bad argument of `capture_frames`."""
    # NaN passes `interval < 0` and then never reaches the next save time: one frame only.
    if not math.isfinite(interval) or interval < 0:
        raise ConfigError(f"interval={interval!r}: must be a finite number of seconds >= 0")
    if count < 0:
        raise ConfigError(f"count={count!r}: must be >= 0 (0 = no limit)")
    if os.sep in prefix or "/" in prefix:  # the frames would land outside `out`
        raise ConfigError(f"prefix={prefix!r}: must be a file name prefix, without '/'")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"out={out!r}: is a file, not a folder for the frames")


def _frame_time(capture, frames_read: int, fps: float) -> float:
    """A video file's time of its next frame, seconds: from the frame count at the file's
    frame rate, or from the file's own clock when it states no rate."""
    if fps > 0:
        return frames_read / fps
    return capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0


def _save_new_frame(frame, out: str, prefix: str, index: int, quality: int):
    """Write `frame` as the first free `<prefix>_<number>.jpg` from `index` on, skipping
    numbers taken meanwhile (never overwriting): (its path, the next index)."""
    while True:
        path = os.path.join(out, frame_name(prefix, index))
        index += 1
        if write_new_jpeg(path, frame, quality):
            return path, index
