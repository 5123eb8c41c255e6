"""Detect faces in photos, folders, globs, video files or a camera with a trained detector.

    python detect.py --image photo.jpg              # writes photo_detected.jpg, prints x y w h score
    python detect.py --image photos/                # a folder (recursive): runs/detect/<n>/
    python detect.py --image "photos/*.jpg" --output out/   # a glob, into a folder of yours
    python detect.py --image photo.jpg --json --no-save
    python detect.py --video clip.mp4 --output clip_detected.mp4
    python detect.py --video 0 --show                  # camera 0 in a window; q or Esc stops
    python detect.py --image photos/ --crops faces/ --align   # one aligned crop per face

The model is --weights (a .keras checkpoint, a .tflite or .onnx file from export.py, a SavedModel
folder, or a folder of checkpoints: its best model-*.keras), else the best model-*.keras
under --checkpoint-dir, else the face model shipped in models/ (trained on real photos;
README "The shipped model"), said in one line on stderr. Input and grid size, letterbox
or stretch, and the default score threshold (chosen on validation) are read from the
model itself (model/contract.py); --letterbox / --no-letterbox serve only files saved
without that contract, and one that contradicts it is an error naming both values.

Output, on stdout:
- one line per face, `x y w h score`: box in the image's pixels (top-left corner, width,
  height; integers) and the face score with 3 decimals, best first. With several images
  (a folder, a glob or more than one --image) each image's lines follow a header line
  `# <path>: <n> faces`, so `numpy.loadtxt` (which skips '#' lines) still reads the
  numbers. `--json` prints instead one JSON list of {"image", "faces": [{"x", "y", "w",
  "h", "score"}], "output"} (all images, also the ones without faces).
- a model trained with --landmarks (its contract says so) also gives each face's five
  points (data/landmarks.py: right eye, left eye, nose tip, right and left mouth corner,
  the subject's sides): ten more numbers on its line, `x y` of each point in the image's
  pixels with 1 decimal, and "landmarks": [[x, y], ...] in the JSON; they are drawn as
  coloured dots, in images and video.
- `--crops DIR` writes one image per face, DIR/<name>_face<k>.jpg (k = 1 for the best
  face; the inputs' subfolders kept as for --output); with `--align` the 112 x 112 crop a
  face recogniser expects, warped onto the ArcFace five-point template (a model without
  landmarks cannot align: an error before any image is read).
- the annotated image is written as <name>_detected<ext> (.jpg when OpenCV cannot write
  the input's extension): for one image next to it, for several (a folder, a glob, more
  than one --image) under a new numbered folder runs/detect/<n>/ of the working
  directory, never into the photos' own folders (a dataset stays as it was); the folder
  is named on stderr at the end. Or to --output: a file with an image extension OpenCV
  writes for one image (or a folder: an existing one, or a name ending in /), a folder
  for several. In a folder the inputs' subfolders are kept. Folder and glob
  scans skip files already named *_detected.*, so a second run does not detect on its
  own output. No output may name an input (image or video): such a run is refused
  before anything is written.
- images whose header claims more than --max-image-pixels pixels (default 100
  megapixels) are refused unread, like unreadable ones; a truncated image is processed
  with a line `detect.py: warning: <path>: truncated image ...` on stderr (the exit
  status stays 0 for it).
- video: the annotated stream (boxes, scores and the frame rate drawn) goes to --output
  (.mp4 or .avi; default for a video file: <name>_detected.mp4 beside it) and/or a window
  (--show); a line with frames, seconds and frames per second is printed at the end.

Exit status: 0 every image processed; 1 some images could not be read or their annotated
copy not written (each named on one stderr line `detect.py: warning: <path>: ...`; the
others are processed and written); 2 nothing could be done: a usage error, a missing or
incompatible checkpoint, an output over an input, or no input image processed (one line
`detect.py: error: ...`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common.cli import (START_UP_NOISE, add_config_arguments, config_from_args, native_stderr_filtered,
                 overwritten_input, run_main, start_runtime)
from common.errors import ConfigError, ImageError, first_line
from model.postprocess import DetectSpec

PROG = "detect.py"
# The model that ships with the repository, used when the user has none of their own.
SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models",
                             "face_detector.tflite")
SUFFIX = "_detected"
# Annotated copies of a run over several images: RUNS_DIR/1, RUNS_DIR/2, ... (relative to
# the working directory, as other detection tools do).
RUNS_DIR = os.path.join("runs", "detect")
_GLOB_CHARS = "*?["


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Detect faces with a trained checkpoint; draw them and print x y w h score.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", metavar="PATH",
                        help="image files, folders (searched recursively) or globs")
    source.add_argument("--video", metavar="PATH|INDEX",
                        help="a video file, or a camera index such as 0")
    parser.add_argument("--weights", metavar="FILE",
                        help=".keras, .tflite, .onnx or SavedModel folder (default: the best "
                        "model-*.keras under --checkpoint-dir, else models/face_detector.tflite)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up lines (CUDA, absl), hidden otherwise")
    parser.add_argument("--output", metavar="PATH",
                        help="annotated image (one input), folder (several) or video file")
    parser.add_argument("--threshold", dest="score_threshold", type=float, default=None,
                        metavar="SCORE", help="minimum face score (default: the one stored "
                        "in the model, chosen on validation; else 0.5)")
    parser.add_argument("--no-save", action="store_true", help="do not write annotated images")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--show", action="store_true",
                        help="with --video: show the annotated stream in a window")
    parser.add_argument("--crops", metavar="DIR",
                        help="with --image: write one crop per face into DIR")
    parser.add_argument("--align", action="store_true",
                        help="with --crops: 112x112 crops aligned on the five landmarks "
                        "(a model trained with --landmarks)")
    add_config_arguments(
        parser, only=("checkpoint_dir", "letterbox", "nms_iou", "max_detections",
                      "max_image_pixels")
    )
    return parser


# ---------------------------------------------------------------------------- inputs
def expand_images(arguments: Sequence[str]) -> Tuple[List[str], bool]:
    """--image arguments -> (image paths, several: True if --output names a folder).

    A folder gives its image files (recursively), a pattern its matches, in sorted
    order; scans skip files named *_detected.* (earlier outputs). A plain path is kept
    as given even if missing, so that it is reported like any unreadable image.
    """
    from data.image import IMAGE_EXTENSIONS, image_files

    paths: List[str] = []
    several = len(arguments) > 1
    for arg in arguments:
        if os.path.isdir(arg):
            found = [p for p in image_files(arg) if not _is_output(p)]
            if not found:
                raise ImageError(f"{arg}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder")
            paths.extend(found)
            several = True
        elif not os.path.exists(arg) and any(c in arg for c in _GLOB_CHARS):
            found = sorted(p for p in glob.glob(arg, recursive=True)
                           if os.path.isfile(p) and not _is_output(p))
            if not found:
                raise ImageError(f"{arg}: no file matches this pattern")
            paths.extend(found)
            several = True
        else:
            paths.append(arg)
    # The same file named twice (a folder and a glob) is processed once.
    return list(dict.fromkeys(paths)), several


def _is_output(path: str) -> bool:
    return os.path.splitext(os.path.basename(path))[0].endswith(SUFFIX)


def output_paths(paths: Sequence[str], several: bool, output: Optional[str]) -> List[str]:
    """Where each image's annotated copy goes (see the module docstring).

    Raises:
        ConfigError: --output cannot hold what it is asked to: a file for several images,
            or a file name without an image extension OpenCV writes for one.
    """
    import cv2

    def named(path):
        stem, ext = os.path.splitext(path)
        # An input OpenCV reads but cannot write under its own extension ('photo', .tif
        # builds without a writer): imwrite would fail, so the copy is a JPEG.
        return stem + SUFFIX + (ext if cv2.haveImageWriter("x" + ext) else ".jpg")

    if output is None:
        return [named(p) for p in paths]
    folder = os.path.isdir(output) or output.endswith(("/", os.sep))
    if several and os.path.exists(output) and not os.path.isdir(output):
        raise ConfigError(f"--output {output}: is a file; {len(paths)} images need a folder")
    if not several and not folder:
        if not cv2.haveImageWriter(output):
            raise ConfigError(
                f"--output {output}: not an image file name OpenCV can write (give it an "
                "extension such as .jpg or .png, or name a folder)"
            )
        return [output]
    if not several:
        return [os.path.join(output, named(os.path.basename(paths[0])))]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.join(output, named(os.path.relpath(os.path.abspath(p), root))) for p in paths]


def next_run_folder(parent: str) -> str:
    """`parent/<n>/` with n the smallest positive number not taken yet (created on write)."""
    n = 1
    while os.path.exists(os.path.join(parent, str(n))):
        n += 1
    return os.path.join(parent, str(n)) + os.sep


def check_not_over_inputs(paths: Sequence[str], outputs: Sequence[str],
                          output: Optional[str]) -> None:
    """ConfigError naming both files when an annotated copy would replace an input image
    (`--output a.jpg` for a.jpg, or a folder run landing on one of its inputs)."""
    clash = overwritten_input(outputs, paths)
    if clash is None:
        return
    out, image = clash
    source = paths[list(outputs).index(out)]
    if output is not None and out == output:
        raise ConfigError(f"--output {out}: is the input image {image}; not writing over it")
    where = f"--output {output}" if output is not None else "the default output"
    raise ConfigError(f"{where}: the annotated copy of {source} would be written over the "
                      f"input image {image}; choose another --output")


def face_line(face: dict) -> str:
    """One face of `model.detector.face_rows` as its text line: `x y w h score`, then the
    ten coordinates of its landmarks when it has them."""
    line = f"{face['x']} {face['y']} {face['w']} {face['h']} {face['score']:.3f}"
    if "landmarks" in face:
        line += "".join(f" {x:.1f} {y:.1f}" for x, y in face["landmarks"])
    return line


def _common_folder(paths: Sequence[str]) -> str:
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def crop_path(path: str, k: int, crops: str, root: str) -> str:
    """Where face `k` (1 = best) of image `path` goes under `crops`: its path relative to
    `root` (the inputs' common folder), `_face<k>.jpg` for its extension."""
    relative = os.path.relpath(os.path.abspath(path), root)
    return os.path.join(crops, os.path.splitext(relative)[0] + f"_face{k}.jpg")


def video_source(text: str):
    """'0' -> camera 0; anything else is a file path."""
    return int(text) if text.isdigit() else text


# ------------------------------------------------------------------------------ main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    if args.show and not args.video:
        raise ConfigError("--show works with --video only")
    if args.crops and not args.image:
        raise ConfigError("--crops works with --image only")
    if args.align and not args.crops:
        raise ConfigError("--align works with --crops DIR only")
    outputs, run_folder = None, None
    if args.image:
        paths, several = expand_images(args.image)
        if not args.no_save:  # checked before the model loads: a refusal costs nothing
            # Several images without --output: a new runs/detect/<n>/, not their folders.
            if args.output is None and several:
                run_folder = next_run_folder(RUNS_DIR)
            outputs = output_paths(paths, several, args.output or run_folder)
            check_not_over_inputs(paths, outputs, args.output)
    elif args.video and args.output and not args.no_save:
        clash = overwritten_input([args.output], [args.video])
        if clash is not None:
            raise ConfigError(f"--output {args.output}: is the input video {clash[1]}; "
                              "not writing over it")
    start_runtime(config, verbose=args.verbose)  # before the first decode and TF import
    from common.errors import CheckpointError
    from model.detector import FaceDetector, resolve_weights

    shipped = False
    try:
        weights = resolve_weights(args.weights, config.checkpoint_dir)
    except CheckpointError:
        if args.weights is not None or not os.path.isfile(SHIPPED_MODEL):
            raise
        weights, shipped = SHIPPED_MODEL, True
    # InputMapping or stretch, and the score threshold chosen on validation, come with the
    # model (its contract); --letterbox / --no-letterbox only for files without one.
    # TFLite announces its CPU delegate on file descriptor 2 when the model loads.
    with native_stderr_filtered(None if args.verbose else START_UP_NOISE):
        detector = FaceDetector.load(weights, letterbox=args.letterbox)
    if args.align and not detector.landmarks:
        raise ConfigError(f"--align: {weights} predicts no landmarks (train with "
                          "--landmarks); leave --align out for crops of the boxes")
    if args.score_threshold is None:
        config = config.replace(score_threshold=detector.score_threshold)
    if shipped:
        print(f"{PROG}: no checkpoint under {config.checkpoint_dir}/: using the shipped model "
              f"{os.path.relpath(SHIPPED_MODEL)}, score threshold {config.score_threshold:g} "
              "(pass --weights to use your own)", file=sys.stderr)
    spec = DetectSpec.from_config(config)
    if args.video:
        return _run_video(args, detector, spec)
    return _run_images(args, detector, spec, paths, several, outputs,
                       config.max_image_pixels, run_folder)


def _run_images(args, detector, spec, paths, several, outputs, max_pixels,
                run_folder=None) -> int:
    """Each image in turn; one that cannot be read or written is named on one warning
    line and the run goes on to the next (a single image raises instead). `run_folder`:
    the runs/detect/<n>/ the copies go to, named at the end."""
    from tqdm import tqdm

    from data.image import read_image
    from model.detector import annotate, face_crops, face_rows, write_image

    results, failures, write_failures = [], [], 0
    crop_root = _common_folder(paths) if args.crops else None
    bar = tqdm(paths, desc="detect", unit="image", disable=None if len(paths) > 1 else True)
    for i, path in enumerate(bar):
        out = None if outputs is None else outputs[i]
        try:
            # A truncated image is processed; its warning becomes one stderr line.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image = read_image(path, max_pixels=max_pixels)
            for warning in caught:
                bar.write(f"{PROG}: warning: {warning.message}", file=sys.stderr)
            detections = detector.detect(image, spec)
            if out is not None:
                try:
                    write_image(out, annotate(image, detections))
                except ImageError:
                    write_failures += 1
                    raise
            if args.crops:
                for k, crop in enumerate(face_crops(image, detections, args.align), 1):
                    write_image(crop_path(path, k, args.crops, crop_root), crop)
        except ImageError as e:
            if len(paths) == 1:
                raise
            failures.append(path)
            bar.write(f"{PROG}: warning: {e}", file=sys.stderr)
            continue
        faces = face_rows(detections)
        results.append({"image": path, "faces": faces, "output": out})
        if not args.json:
            lines = [f"# {path}: {len(faces)} faces"] if several else []
            lines += [face_line(f) for f in faces]
            if lines:
                bar.write("\n".join(lines), file=sys.stdout)
    bar.close()
    if args.json:
        print(json.dumps(results, indent=2))
    if failures and not results:
        done = "read" if not write_failures else "read and written"
        raise ImageError(f"none of the {len(paths)} images could be {done}")
    written = [r["output"] for r in results if r["output"]]
    if run_folder and written:
        # stderr: stdout holds the faces (numpy.loadtxt-readable lines, or the JSON).
        print(f"{PROG}: {len(written)} annotated images in {run_folder}", file=sys.stderr)
    return 1 if failures else 0


def _run_video(args, detector, spec) -> int:
    source = video_source(args.video)
    output = args.output
    if output is None and not args.no_save and isinstance(source, str):
        output = os.path.splitext(source)[0] + SUFFIX + ".mp4"
    if args.no_save:
        output = None
    elif output is None and not args.show:
        raise ConfigError(f"--video {args.video}: a camera needs --output FILE or --show "
                          "(or --no-save to measure the frame rate only)")
    summary = annotate_video(detector, source, output, args.show, spec)
    if args.json:
        print(json.dumps({
            "video": args.video, "frames": summary.frames, "seconds": round(summary.seconds, 3),
            "fps": round(summary.fps, 2), "faces": summary.faces, "output": summary.output,
            "stopped": summary.stopped,
        }))
    else:
        written = f"; wrote {summary.output}" if summary.output else ""
        print(f"{args.video}: {summary.frames} frames in {summary.seconds:.2f} s, "
              f"{summary.fps:.1f} fps ({summary.stopped}), {summary.faces} faces{written}")
    return 0


# ----------------------------------------------------------------------------- video
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
_QUIT_KEYS = (ord("q"), 27)
# Weight of the newest frame in the on-screen frame rate (smooths the reading).
_FPS_SMOOTHING = 0.1


class VideoSummary(NamedTuple):
    frames: int  # frames processed
    seconds: float  # wall time of reading, detecting, drawing and writing them
    faces: int  # detections over all frames
    output: Optional[str]  # the video written, if any
    stopped: str  # 'end of video', 'quit', 'interrupted' or 'read failed'

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def annotate_video(
    detector,
    source: Union[int, str],
    output: Optional[str] = None,
    show: bool = False,
    spec: Optional[DetectSpec] = None,
    progress: bool = True,
) -> VideoSummary:
    """Detect faces in every frame of a video file or camera, drawing boxes and the fps.

    Args:
        detector: the loaded `model.detector.FaceDetector`.
        source: a video file path, or a camera index (int).
        output: write the annotated video here (.mp4 or .avi), atomically: the file
            appears complete when the stream ends, q/Esc is pressed or Ctrl-C stops it.
        show: show the annotated frames in a window (needs a display); q or Esc stops.
        spec: threshold, NMS IoU and cap (`model.postprocess.DetectSpec`); None: the
            model's own (`FaceDetector.detect_spec`).
        progress: a tqdm bar over the frames.

    Returns:
        VideoSummary (frames, seconds, faces, output, how it stopped); `.fps` is the
        end-to-end frame rate.
    """
    import contextlib
    import time

    import cv2
    from tqdm import tqdm

    from data.capture import open_capture
    from common.files import atomic_path

    _check_video_output(output)
    capture = open_capture(source)
    from_file = isinstance(source, str)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if from_file else 0
    fps_in = capture.get(cv2.CAP_PROP_FPS)
    fps_in = fps_in if 0 < fps_in < 1000 else 30.0
    bar = tqdm(total=total or None, desc="video", unit="frame", disable=not progress)
    sink = None
    try:
        with (atomic_path(output) if output else contextlib.nullcontext()) as tmp:
            sink = _VideoSink(tmp, output, fps_in) if tmp is not None else None
            started = time.perf_counter()
            frames, faces, stopped = _annotate_frames(detector, capture, spec, sink, show, bar,
                                                      from_file)
            seconds = time.perf_counter() - started
            if sink is not None and not sink.close():
                raise ImageError(f"{source}: no frame could be read; nothing written")
    except cv2.error as e:
        if show:
            raise ConfigError(f"--show: cannot open a window ({first_line(e)})") from None
        raise
    finally:
        if sink is not None:
            sink.close()
        bar.close()
        capture.release()
        if show:
            _destroy_windows()
    return VideoSummary(frames, seconds, faces, output, stopped)


def _annotate_frames(detector, capture, spec, sink, show: bool, bar, from_file: bool):
    """Detect, draw (boxes, points, fps) and write every frame until the stream ends, q /
    Esc is pressed or Ctrl-C stops it; (frames, faces, how it stopped)."""
    import time

    import cv2

    from model.detector import annotate

    frames = faces = 0
    frame_rate = _FrameRate(time.perf_counter())
    while True:
        try:
            ok, frame = capture.read()
            if not ok or frame is None:
                return frames, faces, "end of video" if from_file else "read failed"
            det = detector.detect(frame, spec)
            drawn = annotate(frame, det)
            _draw_fps(drawn, frame_rate.tick(time.perf_counter()))
            if sink is not None:
                sink.write(drawn)
            frames += 1
            faces += len(det.scores)
            bar.update(1)
            if show:
                cv2.imshow("detect.py (q to stop)", drawn)
                if cv2.waitKey(1) & 0xFF in _QUIT_KEYS:
                    return frames, faces, "quit"
        except KeyboardInterrupt:
            return frames, faces, "interrupted"  # a camera's normal end: keep what was written


class _VideoSink:
    """The annotated video's writer into `tmp` (the atomic temporary of `output`), opened at
    the first frame, whose size it takes."""

    def __init__(self, tmp: str, output: str, fps: float):
        self.tmp, self.output, self.fps = tmp, output, fps
        self.writer = None
        self.written = False

    def write(self, frame) -> None:
        if self.writer is None:
            self.writer = _open_writer(self.tmp, self.output, self.fps, frame.shape)
        self.writer.write(frame)
        self.written = True

    def close(self) -> bool:
        """Release the writer (again: nothing); whether any frame was written."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        return self.written


def _check_video_output(output: Optional[str]) -> None:
    """ConfigError naming --output unless it is None or ends in a known video suffix."""
    if output is None:
        return
    if os.path.splitext(output)[1].lower() not in VIDEO_CODECS:
        raise ConfigError(
            f"--output {output}: video output must end in {' or '.join(VIDEO_CODECS)}"
        )


class _FrameRate:
    """The frame rate drawn on a video: frames per second from one frame to the next,
    smoothed (exponential average, `_FPS_SMOOTHING`) so the number can be read."""

    def __init__(self, start: float):
        self.last, self.value, self.frames = start, 0.0, 0

    def tick(self, now: float) -> float:
        rate = 1.0 / max(now - self.last, 1e-9)
        self.value = rate if self.frames == 0 else (
            _FPS_SMOOTHING * rate + (1 - _FPS_SMOOTHING) * self.value)
        self.last, self.frames = now, self.frames + 1
        return self.value


def _open_writer(tmp: str, output: str, fps: float, shape):
    import cv2

    codec = VIDEO_CODECS[os.path.splitext(output)[1].lower()]
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise ImageError(f"{output}: cannot write video (codec {codec} unavailable)")
    return writer


def _draw_fps(image, fps: float) -> None:
    """Write the frame rate in the top-left corner, in place (white on a dark outline)."""
    import cv2

    scale = max(0.5, min(image.shape[:2]) / 600)
    thickness = max(1, round(scale * 2))
    origin = (8, int(8 + 22 * scale))
    text = f"{fps:.1f} fps"
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)


def _destroy_windows() -> None:
    import cv2

    try:
        cv2.destroyAllWindows()
    except cv2.error:  # headless build: there was no window
        pass


if __name__ == "__main__":
    run_main(main)
