"""What every CLI shares: config flags generated from `Config`, and one-line error exits.

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)            # --input-size, --grid-size, --no-augment, ...
    args = parser.parse_args()
    config = config_from_args(args)         # Config() with the given flags applied
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from typing import Callable, Iterable, Optional, Sequence, Tuple

from config import Config, field_docs, load_config
from common.errors import FaceDetectorError


# What TensorFlow's C++ start-up writes to a CPU user before any output of ours: none of
# them is an error (no GPU here is no fault), and a new user reads them as errors.
START_UP_NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda drivers|cuInit|cuda_platform|TF-TRT|"
    r"oneDNN custom operations|This TensorFlow binary is optimized|"
    r"rebuild TensorFlow with the appropriate compiler flags|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"Created TensorFlow Lite XNNPACK delegate")


def start_runtime(config: Config, verbose: bool = False) -> None:
    """What a command line does before its first image or network: the one place that
    sets OpenCV's pixel limit, and starts TensorFlow with its start-up lines filtered.

    OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, at its first decode (loader workers
    inherit it): set to config.max_image_pixels it also stops the formats whose header
    data/image.py does not parse (TIFF, JPEG 2000...) before they are decoded; a limit the
    user exported stays. TensorFlow writes its native lines to file descriptor 2 while it
    loads and finds its devices; those are captured and written back without the lines of
    START_UP_NOISE, so a real error still shows. `verbose` keeps every line.
    """
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(config.max_image_pixels))
    with native_stderr_filtered(None if verbose else START_UP_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # device discovery: the cuInit lines


@contextlib.contextmanager
def native_stderr_filtered(noise: Optional["re.Pattern"]):
    """Capture what C/C++ code writes to file descriptor 2 inside the block, then write
    it to sys.stderr without the lines `noise` matches (None: unchanged)."""
    if noise is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, only: Optional[Sequence[str]] = None):
    """Add one flag per Config field (or per field named in `only`), defaulting to None.

    Booleans get `--name` / `--no-name`. `--config FILE` loads a saved configuration first.
    """
    group = parser.add_argument_group("configuration (defaults in config.py)")
    group.add_argument("--config", metavar="FILE", help="start from a saved config.json")
    defaults = Config()
    # argparse formats help with %: a comment's "1%" must reach it as "1%%".
    docs = {name: doc.replace("%", "%%") for name, doc in field_docs().items()}
    for f in dataclasses.fields(Config):
        if only is not None and f.name not in only:
            continue
        default = getattr(defaults, f.name)
        if f.type in (bool, "bool"):
            group.add_argument(
                _flag(f.name), dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                help=f"{docs.get(f.name, '')} (default: {default})",
            )
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), type(default))
            group.add_argument(
                _flag(f.name), dest=f.name, default=None, type=kind, metavar=f.name.upper(),
                help=f"{docs.get(f.name, '')} (default: {default!r})",
            )
    return group


def config_from_args(args: argparse.Namespace, base: Optional[Config] = None) -> Config:
    """Apply the flags that were given to `base` (or to `--config FILE`, or to Config())."""
    if base is None:
        base = load_config(args.config) if getattr(args, "config", None) else Config()
    changes = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if getattr(args, f.name, None) is not None
    }
    return base.replace(**changes)


def path_argument(text: str) -> str:
    """argparse `type` of a file or folder flag: an empty value is refused (`--out ''`
    would otherwise write into the current folder, `os.path.join('', x)` being `x`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty path (it would mean the current folder); give a file or folder")
    return text


def _file_keys(path: str) -> list:
    """What identifies the file `path` names: its real path and, if it exists, its inode
    (so hard links, symlinks and case-insensitive spellings of one file compare equal)."""
    keys = [("path", os.path.normcase(os.path.realpath(path)))]
    try:
        st = os.stat(path)
    except OSError:
        return keys
    if st.st_ino:  # some file systems report 0 for every file
        keys.append(("inode", st.st_dev, st.st_ino))
    return keys


def overwritten_input(outputs: Iterable[str], inputs: Iterable[str]
                      ) -> Optional[Tuple[str, str]]:
    """(output, input) for the first output path that names one of the input files, else
    None: what a CLI checks before writing anything, so no run replaces its own input.

    Linear in the number of paths (one stat each), for folder runs of many images.
    """
    owner = {}
    for path in inputs:
        for key in _file_keys(path):
            owner.setdefault(key, path)
    for out in outputs:
        for key in _file_keys(out):
            if key in owner:
                return out, owner[key]
    return None


# A library error about one value starts `name=value: reason` (Config.validate's form).
_VALUE_ERROR = re.compile(r"^([a-z][a-z0-9_]*)=(.*?): ", re.DOTALL)


def as_flag_message(message: str, flags: Iterable[str] = ()) -> str:
    """A library message in the words of the command line: a leading `name=value: ` of a
    Config field, or of a name in `flags` (the CLI's other parameters), becomes
    `--name value: `; anything else is returned as it is.

        as_flag_message("grid_size=5: must divide input_size=224")
        -> "--grid-size 5: must divide input_size=224"
    """
    match = _VALUE_ERROR.match(message)
    if match is None:
        return message
    name, value = match.groups()
    if name not in _CONFIG_FIELDS and name not in set(flags):
        return message
    rest = message[match.end():]
    if value in ("True", "False"):  # a boolean flag: --letterbox / --no-letterbox
        return f"--{'' if value == 'True' else 'no-'}{_flag(name)[2:]}: " + rest
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]  # the repr of a string: the flag took it unquoted
    return f"{_flag(name)} {value}: " + rest


_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(Config))


def run_main(main: Callable[[], Optional[int]], flags: Iterable[str] = ()) -> None:
    """Run a CLI's main; turn project errors and file-system errors (OSError: missing
    files, full disks, unwritable folders) into one line on stderr, exit 2.

    Library errors name values (`interval=0: ...`), never flags: `as_flag_message` puts
    them in the command line's words, for Config fields and for the names in `flags`.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    # A module run with `python -m name` is named so; a script by its file name.
    prog = f"python -m {spec.name}" if spec is not None else os.path.basename(sys.argv[0])
    try:
        code = main()
    except FaceDetectorError as e:
        print(f"{prog}: error: {as_flag_message(str(e), flags)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        # A missing file, a full disk, a read-only folder...: the file and the reason.
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
