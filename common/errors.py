"""The project's error types. Each message is one line naming the file, line or argument.

CLIs catch `FaceDetectorError` (see `cli.run_main`) and print the message alone, so a user
never meets a traceback for bad input.
"""


class FaceDetectorError(Exception):
    """Base class: an error whose message is fit to show the user as it is."""


class ConfigError(FaceDetectorError, ValueError):
    """A configuration value or flag that cannot work."""


class AnnotationError(FaceDetectorError, ValueError):
    """A malformed annotation file: the message names the file, line and what was expected."""


class ImageError(FaceDetectorError, OSError):
    """An image that is missing, unreadable or corrupt."""


class DatasetError(FaceDetectorError):
    """A dataset that cannot be used as configured (missing layout, missing images...)."""


class CheckpointError(FaceDetectorError):
    """A checkpoint that is missing, unreadable or incompatible with the configuration."""


class WeightsUnavailableError(FaceDetectorError):
    """Pretrained weights that cannot be loaded (offline, missing file)."""


class DownloadError(FaceDetectorError):
    """A download that failed (offline, bad checksum, no mirror answering)."""


class TrainingDiverged(FaceDetectorError):
    """Training stopped on a NaN or Inf loss or weights (the message names the epoch, the
    batch for a loss, and the files kept)."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if it has none), cut to
    `limit` characters: how another library's error is quoted inside a one-line message."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
