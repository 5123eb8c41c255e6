"""Collect photos for your own face set from a camera, or a video file standing in for one.

    python tools/capture.py --camera 0 --out my_faces/ --interval 1.0 --count 50
    python tools/capture.py --video clip.mp4 --out my_faces/ --interval 0.5

Saves one frame every --interval seconds up to --count frames as img_0001.jpg, ... in
--out, numbered after the files already there and never writing over one. Ctrl-C stops a
camera capture and keeps what was saved; --preview shows the frames (q or Esc stops).
Next, label the folder with labelme:
`labelme my_faces --labels face --nodata --autosave`. See data/capture.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

# A script in tools/: the repository root is where its packages are.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.cli import path_argument, run_main
from data.capture import DEFAULT_PREFIX, capture_frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capture.py",
        description="Save camera (or video file) frames as JPEGs to label as your own faces.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--camera", type=int, default=0, help="camera index (default 0)")
    where.add_argument("--video", metavar="FILE", help="read this video file instead of a camera")
    parser.add_argument("--out", type=path_argument, required=True, help="folder for the JPEGs")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between saved frames (default 1.0)")
    parser.add_argument("--count", type=int, default=50,
                        help="frames to save (default 50; 0 = until the video ends or Ctrl-C)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="file name prefix (default img)")
    parser.add_argument("--preview", action="store_true", help="show the frames (q to stop)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    source = args.video if args.video else args.camera
    result = capture_frames(source, args.out, args.interval, args.count, args.prefix,
                            args.preview)
    if result.saved:
        names = os.path.basename(result.saved[0]), os.path.basename(result.saved[-1])
        print(f"saved {len(result.saved)} frames to {args.out} ({names[0]} .. {names[1]}; "
              f"stopped: {result.stopped})")
        print(f"next: label them, e.g. `labelme {args.out} --labels face --nodata --autosave`")
    else:
        print(f"no frames saved ({result.frames_read} read; stopped: {result.stopped})")
    return 0


if __name__ == "__main__":
    run_main(main, flags=("out", "interval", "count", "prefix"))
