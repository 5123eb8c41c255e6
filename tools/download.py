"""Download WIDER FACE (the official archives) into the layout train.py reads.

    python tools/download.py                                  # train + val + annotations
    python tools/download.py --parts val annotations --root data/WIDER
    python tools/download.py --mirror https://my.mirror/wider/ --sha256 WIDER_val.zip=<hex>

Each archive is fetched from the mirrors in order (--mirror replaces the default ones;
`file://` folders work too), resumed when run again, verified when its SHA-256 is known
(built in, --checksums FILE in sha256sum format, or --sha256 NAME=HEX) and unpacked under
--root; a part already there is skipped. See data/download.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

# A script in tools/: the repository root is where its packages are.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.cli import path_argument, run_main
from config import WIDER_ROOT
from data.download import (DEFAULT_PARTS, OFFICIAL_PAGE, PARTS, download_wider,
                           parse_checksum_overrides, read_checksum_manifest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="download.py",
        description=f"Download WIDER FACE ({OFFICIAL_PAGE}) into the layout train.py reads.",
    )
    parser.add_argument("--root", type=path_argument, default=WIDER_ROOT,
                        help="dataset root (default: %(default)s)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS),
                        help="parts to fetch (default: %(default)s)")
    parser.add_argument("--mirror", action="append", metavar="URL",
                        help="base URL holding the archives; repeatable, tried in order "
                             "(replaces the default mirrors)")
    parser.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                        help="expected SHA-256 of an archive (file or part name); repeatable")
    parser.add_argument("--checksums", metavar="FILE", help="sha256sum-style checksum manifest")
    parser.add_argument("--keep-archives", action="store_true", help="keep the zips after unpacking")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per network read")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    checksums = read_checksum_manifest(args.checksums) if args.checksums else {}
    checksums.update(parse_checksum_overrides(args.sha256))
    results = download_wider(args.root, args.parts, args.mirror, checksums,
                             progress=not args.no_progress, keep_archives=args.keep_archives,
                             timeout=args.timeout)
    for result in results:
        verb = "already present" if result.action == "present" else "unpacked"
        print(f"{result.part}: {verb} in {result.directory}")
    return 0


if __name__ == "__main__":
    run_main(main, flags=("sha256",))
