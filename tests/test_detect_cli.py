"""detect.py: images, folders and globs in; annotated images and `x y w h score` lines or
JSON out; a bad image in a folder is skipped with one warning; bad usage fails in one line."""

import json
import math
import os
import re
import struct
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest

import detect
from common.errors import CheckpointError, ConfigError, ImageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The fixed network below finds these four faces in any 128x128 image.
FACES_128 = ["16 16 32 32 0.900", "80 16 32 32 0.900", "16 80 32 32 0.900", "80 80 32 32 0.900"]
LINE = re.compile(r"^\d+ \d+ \d+ \d+ \d\.\d{3}$")


def logit(p):
    return math.log(p / (1 - p))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 64-px, 2x2-grid .keras model that predicts, in every cell, a face a quarter of
    the input wide at the cell centre with score 0.9, whatever the image."""
    inputs = keras.Input((64, 64, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.AveragePooling2D(32)(x)
    head = keras.layers.Conv2D(5, 1, activation="sigmoid", kernel_initializer="zeros")
    x = head(x)
    head.bias.assign(np.array([logit(0.25), logit(0.25), 0.0, 0.0, logit(0.9)], np.float32))
    path = str(tmp_path_factory.mktemp("ckpt") / "model-0.50.keras")
    keras.Model(inputs, x).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    """A folder with one good 128x128 JPEG (in a subfolder) and one corrupt .jpg."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "sub" / "good.jpg"), np.full((128, 128, 3), 90, np.uint8))
    (folder / "bad.jpg").write_bytes(b"this is not a jpeg")
    return folder


def test_folder_with_a_corrupt_image_processes_the_rest(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = detect.main(["--image", str(photos), "--weights", checkpoint, "--output", str(out)])
    assert code == 1  # some image failed, the others were processed
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("detect.py:")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"detect.py: warning: {photos / 'bad.jpg'}: not a readable image")
    lines = captured.out.splitlines()
    assert lines[0] == f"# {photos / 'sub' / 'good.jpg'}: 4 faces"
    assert lines[1:] == FACES_128 and all(LINE.match(line) for line in lines[1:])
    # Subfolders are kept under --output; nothing is written for the bad image.
    written = cv2.imread(str(out / "sub" / "good_detected.jpg"))
    assert written.shape == (128, 128, 3)
    assert written[16:48, 16].mean(axis=0)[1] > 150  # a green box edge at x=16
    assert sorted(os.listdir(out)) == ["sub"] and os.listdir(out / "sub") == ["good_detected.jpg"]


def test_single_image_json_thresholds_and_default_output(checkpoint, photos, capsys):
    good = str(photos / "sub" / "good.jpg")
    assert detect.main(["--image", good, "--weights", checkpoint, "--json", "--no-save"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results == [{"image": good, "output": None, "faces": [
        {"x": x, "y": y, "w": 32, "h": 32, "score": 0.9}
        for x, y in ((16, 16), (80, 16), (16, 80), (80, 80))]}]
    assert not os.path.exists(str(photos / "sub" / "good_detected.jpg"))

    # No --output: written beside the input; one image prints bare lines.
    assert detect.main(["--image", good, "--weights", checkpoint]) == 0
    assert capsys.readouterr().out.splitlines() == FACES_128
    assert os.path.isfile(str(photos / "sub" / "good_detected.jpg"))

    # A glob skips the earlier output; the threshold removes every face.
    pattern = str(photos / "sub" / "*.jpg")
    assert detect.main(["--image", pattern, "--weights", checkpoint, "--threshold", "0.95",
                        "--no-save"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"# {good}: 0 faces"]


def test_bad_inputs_raise_one_line_errors(checkpoint, photos, tmp_path, monkeypatch):
    with pytest.raises(ImageError, match=r"bad.jpg: not a readable image"):
        detect.main(["--image", str(photos / "bad.jpg"), "--weights", checkpoint])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match=r"empty: no image files"):
        detect.main(["--image", str(empty), "--weights", checkpoint])
    with pytest.raises(ImageError, match=r"none of the 2 images could be read"):
        detect.main(["--image", str(photos / "bad.jpg"), str(tmp_path / "missing.jpg"),
                     "--weights", checkpoint])
    monkeypatch.setattr(detect, "SHIPPED_MODEL", str(tmp_path / "not_shipped.tflite"))
    with pytest.raises(CheckpointError, match=r"no model-\*\.keras checkpoint found"):
        detect.main(["--image", str(photos), "--checkpoint-dir", str(empty)])
    with pytest.raises(ConfigError, match="score_threshold=1.5"):
        detect.main(["--image", str(photos), "--weights", checkpoint, "--threshold", "1.5"])
    with pytest.raises(ConfigError, match="--show works with --video only"):
        detect.main(["--image", str(photos), "--show"])
    with pytest.raises(ConfigError, match="a camera needs --output FILE or --show"):
        detect.main(["--video", "0", "--weights", checkpoint])


def test_video_file_is_annotated_and_fps_reported(checkpoint, tmp_path, capsys):
    clip = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 128))
    for _ in range(4):
        writer.write(np.full((128, 128, 3), 90, np.uint8))
    writer.release()
    assert detect.main(["--video", clip, "--weights", checkpoint, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 4 and summary["faces"] == 16 and summary["fps"] > 0
    assert summary["output"] == str(tmp_path / "clip_detected.mp4")
    assert os.path.getsize(summary["output"]) > 0


def test_command_line_errors_are_one_line(checkpoint, photos, tmp_path):
    """As a user runs it: unknown flag -> usage error (exit 2); missing --weights file ->
    one line 'detect.py: error: ... not found' (exit 2); neither loads TensorFlow."""
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run(
        [sys.executable, "detect.py", "--image", str(photos), "--bogus"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == "detect.py: error: unrecognized arguments: --bogus"
    missing = str(tmp_path / "missing.keras")
    done = subprocess.run(
        [sys.executable, "detect.py", "--image", str(photos), "--weights", missing],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"detect.py: error: {missing}: checkpoint not found"]


def test_without_checkpoints_the_shipped_model_is_used_and_said(checkpoint, photos, tmp_path,
                                                                 monkeypatch, capsys):
    """No --weights and no checkpoint of the user's: detect.py runs the shipped model and
    says so in one stderr line; a user's --weights never falls back to it."""
    monkeypatch.setattr(detect, "SHIPPED_MODEL", checkpoint)  # stands in for models/
    empty = tmp_path / "no_runs"
    empty.mkdir()
    image = str(photos / "sub" / "good.jpg")
    assert detect.main(["--image", image, "--no-save", "--checkpoint-dir", str(empty)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == FACES_128
    assert captured.err.count("\n") == 1 and "using the shipped model" in captured.err
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        detect.main(["--image", image, "--weights", str(tmp_path / "mine.keras")])


def test_the_shipped_model_uses_its_validated_threshold_unless_told(checkpoint, photos,
                                                                     tmp_path, monkeypatch,
                                                                     capsys):
    """The contract stored in the shipped model sets the default threshold (here above the
    stand-in's 0.9 scores: no face); --threshold overrides it; a bad contract is named."""
    from data.grid import GridSpec
    from model.contract import CONTRACT_FILE, ModelContract, write_contract

    shipped = tmp_path / "models" / "face_detector.keras"
    shipped.parent.mkdir()
    shipped.write_bytes(open(checkpoint, "rb").read())
    write_contract(str(shipped), ModelContract(GridSpec(64, 2), 0.95))
    monkeypatch.setattr(detect, "SHIPPED_MODEL", str(shipped))
    image = str(photos / "sub" / "good.jpg")
    args = ["--image", image, "--no-save", "--checkpoint-dir", str(tmp_path / "none")]
    assert detect.main(args) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "score threshold 0.95" in captured.err
    assert detect.main(args + ["--threshold", "0.5"]) == 0
    assert capsys.readouterr().out.splitlines() == FACES_128
    bad = json.loads(ModelContract(GridSpec(64, 2)).to_json())
    bad["score_threshold"] = "high"
    import zipfile

    with zipfile.ZipFile(checkpoint) as old, zipfile.ZipFile(shipped, "w") as new:
        for item in old.infolist():
            new.writestr(item, old.read(item.filename))
        new.writestr(CONTRACT_FILE, json.dumps(bad))
    with pytest.raises(CheckpointError, match=r"face_detector\.keras: bad face_detector_contract "
                                              r"\(score_threshold='high': must be a number\)"):
        detect.main(args)


# ------------------------------------------------------------- nothing lost, no traceback
def huge_jpeg(path, side=65000):
    """A real 16x16 JPEG whose header claims side x side pixels (crashed cv2 at 65000)."""
    ok, data = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    data = bytearray(data.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(data))
    return path


def test_output_over_the_input_is_refused_and_the_photo_kept(checkpoint, photos):
    good = photos / "sub" / "good.jpg"
    before = good.read_bytes()
    with pytest.raises(ConfigError) as caught:
        detect.main(["--image", str(good), "--weights", checkpoint, "--output", str(good)])
    assert str(caught.value) == f"--output {good}: is the input image {good}; not writing over it"
    # Another spelling of the same file, and a folder run whose copy lands on an input.
    other = str(photos / "sub" / ".." / "sub" / "good.jpg")
    with pytest.raises(ConfigError, match="is the input image"):
        detect.main(["--image", str(good), "--weights", checkpoint, "--output", other])
    earlier = photos / "sub" / "good_detected.jpg"
    earlier.write_bytes(b"my own photo that happens to have this name")
    out = str(photos / "sub") + os.sep
    with pytest.raises(ConfigError) as caught:
        detect.main(["--image", str(good), str(earlier), "--weights", checkpoint, "--output", out])
    assert str(caught.value) == (f"--output {out}: the annotated copy of {good} would be "
                                 f"written over the input image {earlier}; choose another --output")
    assert good.read_bytes() == before
    assert earlier.read_bytes() == b"my own photo that happens to have this name"


def test_a_folder_run_writes_into_a_new_runs_folder_never_into_the_photos(
        checkpoint, photos, tmp_path, monkeypatch, capsys):
    """Several images and no --output: the copies go to runs/detect/1/, then 2/, ... of the
    working directory, named on stderr; the photo folder (a dataset) gets nothing."""
    monkeypatch.chdir(tmp_path)
    (photos / "bad.jpg").unlink()
    cv2.imwrite(str(photos / "top.jpg"), np.full((128, 128, 3), 90, np.uint8))
    before = sorted(str(p.relative_to(photos)) for p in photos.rglob("*"))
    for n in (1, 2):
        assert detect.main(["--image", str(photos), "--weights", checkpoint]) == 0
        run = os.path.join("runs", "detect", str(n))
        assert capsys.readouterr().err.splitlines()[-1] == \
            f"detect.py: 2 annotated images in {run}{os.sep}"
        assert sorted(os.listdir(run)) == ["sub", "top_detected.jpg"]
        assert os.listdir(os.path.join(run, "sub")) == ["good_detected.jpg"]
    assert sorted(str(p.relative_to(photos)) for p in photos.rglob("*")) == before


def test_video_output_over_the_input_video_is_refused(checkpoint, tmp_path):
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"stands in for a video")
    with pytest.raises(ConfigError, match=rf"--output {clip}: is the input video {clip}"):
        detect.main(["--video", str(clip), "--weights", checkpoint, "--output", str(clip)])
    assert clip.read_bytes() == b"stands in for a video"


def test_bad_outputs_are_named_before_any_work(checkpoint, photos, tmp_path):
    good = str(photos / "sub" / "good.jpg")
    for output in (str(tmp_path / "faces.txt"), str(tmp_path / "faces")):
        with pytest.raises(ConfigError, match=rf"--output {output}: not an image file name "
                           "OpenCV can write"):
            detect.main(["--image", good, "--weights", checkpoint, "--output", output])
    existing = tmp_path / "results.jpg"
    existing.write_bytes(b"keep")
    with pytest.raises(ConfigError, match=rf"--output {existing}: is a file; 2 images need a folder"):
        detect.main(["--image", str(photos), "--weights", checkpoint, "--output", str(existing)])
    assert existing.read_bytes() == b"keep"
    # A name ending in / is a folder, made on demand.
    assert detect.main(["--image", good, "--weights", checkpoint,
                        "--output", str(tmp_path / "new") + "/"]) == 0
    assert os.listdir(tmp_path / "new") == ["good_detected.jpg"]


def test_a_folder_run_names_each_bad_file_and_goes_on(checkpoint, tmp_path, capsys):
    """A huge header, a corrupt file and a truncated JPEG among good ones: one stderr line
    each, every other image processed, exit status 1 (some failed)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "c.jpg", "e.jpg"):
        cv2.imwrite(str(folder / name), np.full((128, 128, 3), 90, np.uint8))
    huge_jpeg(folder / "b.jpg")
    (folder / "d.jpg").write_bytes(b"not a jpeg")
    ok, data = cv2.imencode(".jpg", np.full((128, 128, 3), 60, np.uint8))
    short = bytearray(data.tobytes())
    sof = short.find(b"\xff\xc0")
    short[sof + 5:sof + 7] = struct.pack(">H", 256)  # 256 rows claimed, 128 present
    (folder / "f.jpg").write_bytes(bytes(short))
    out = tmp_path / "out"
    code = detect.main(["--image", str(folder), "--weights", checkpoint, "--output", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("detect.py:")]
    assert len(lines) == 3, captured.err
    assert lines[0].startswith(f"detect.py: warning: {folder / 'b.jpg'}: 65000x65000 image")
    assert "max_image_pixels=100000000" in lines[0]
    assert lines[1].startswith(f"detect.py: warning: {folder / 'd.jpg'}: not a readable image")
    assert lines[2].startswith(f"detect.py: warning: {folder / 'f.jpg'}: truncated image")
    headers = [line for line in captured.out.splitlines() if line.startswith("#")]
    assert [h.split(":")[0] for h in headers] == [
        f"# {folder / n}" for n in ("a.jpg", "c.jpg", "e.jpg", "f.jpg")]
    assert sorted(os.listdir(out)) == ["a_detected.jpg", "c_detected.jpg", "e_detected.jpg",
                                       "f_detected.jpg"]
    # The limit is a flag.
    with pytest.raises(ImageError, match=r"a.jpg: 128x128 image .* over max_image_pixels=16383"):
        detect.main(["--image", str(folder / "a.jpg"), "--weights", checkpoint, "--no-save",
                     "--max-image-pixels", "16383"])


def test_write_failures_are_one_line_and_the_run_goes_on(checkpoint, photos, tmp_path, capsys):
    good = str(photos / "sub" / "good.jpg")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    target = str(blocker / "x.jpg")
    with pytest.raises(ImageError) as caught:
        detect.main(["--image", good, "--weights", checkpoint, "--output", target])
    assert str(caught.value).startswith(f"{target}: cannot write image (")
    assert "\n" not in str(caught.value)
    # In a folder run the image whose copy cannot be written is named, the others written.
    (photos / "bad.jpg").unlink()
    cv2.imwrite(str(photos / "top.jpg"), np.full((128, 128, 3), 90, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file named like the subfolder")
    code = detect.main(["--image", str(photos), "--weights", checkpoint, "--output", str(out)])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("detect.py")]
    assert len(lines) == 1
    assert lines[0].startswith(f"detect.py: warning: {out / 'sub' / 'good_detected.jpg'}: "
                               "cannot write image")
    assert os.path.isfile(out / "top_detected.jpg")


# ----------------------------------------------------------------------------- video
def test_annotate_video_draws_every_frame_and_writes_the_stream(tmp_path):
    from model.detector import FaceDetector
    from helpers import bright_box_network, scene

    S, G = 128, 4

    source = str(tmp_path / "clip.avi")
    face = (40, 20, 70, 44)  # x1, y1, x2, y2
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for _ in range(6):
        writer.write(scene(128, 96, face))
    writer.release()
    detector = FaceDetector(bright_box_network(S, G), S, G)
    out = str(tmp_path / "out" / "annotated.avi")
    summary = detect.annotate_video(detector, source, out, progress=False)
    assert (summary.frames, summary.faces, summary.output, summary.stopped) == (
        6, 6, out, "end of video")
    assert summary.fps > 0
    capture = cv2.VideoCapture(out)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 6 and frames[0].shape == (96, 128, 3)
    # The box's left edge is drawn green (B, G, R), the fps text is written top-left.
    x1, y1, x2, y2 = face
    edge = frames[-1][(y1 + y2) // 2, x1].astype(int)
    assert edge[1] > 150 and edge[0] < 100 and edge[2] < 100, edge
    assert frames[-1][5:30, 5:60].max() > 200  # white fps text on the dark background
    assert [f for f in os.listdir(tmp_path / "out")] == ["annotated.avi"]  # no temp left

    with pytest.raises(ConfigError, match=r"--output x.mkv: video output must end in"):
        detect.annotate_video(detector, source, "x.mkv", progress=False)
    with pytest.raises(ImageError, match="missing.mp4: video file not found"):
        detect.annotate_video(detector, str(tmp_path / "missing.mp4"), None, progress=False)


class _FakeCamera:
    """A camera (int source) that gives `frames` copies of `image`, then raises `end` (an
    exception class) from read(), or returns (False, None) if `end` is None."""

    def __init__(self, image, frames, end=None):
        self.image, self.left, self.end = image, frames, end
        self.released = False

    def get(self, prop):
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if self.left == 0:
            if self.end is not None:
                raise self.end()
            return False, None
        self.left -= 1
        return True, self.image.copy()

    def release(self):
        self.released = True


def test_a_camera_stopped_by_ctrl_c_keeps_what_it_wrote(tmp_path, monkeypatch):
    """Ctrl-C is a camera's normal end: the frames read so far are written, complete."""
    import data.capture
    from model.detector import FaceDetector
    from helpers import bright_box_network, scene

    camera = _FakeCamera(scene(128, 96, (40, 20, 70, 44)), 2, end=KeyboardInterrupt)
    monkeypatch.setattr(data.capture, "open_capture", lambda source: camera)
    detector = FaceDetector(bright_box_network(128, 4), 128, 4)
    out = str(tmp_path / "camera.avi")
    summary = detect.annotate_video(detector, 0, out, progress=False)
    assert (summary.frames, summary.faces, summary.stopped) == (2, 2, "interrupted")
    assert camera.released
    capture = cv2.VideoCapture(out)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 2
    assert os.listdir(tmp_path) == ["camera.avi"]  # no temporary left


def test_a_camera_that_gives_no_frame_writes_nothing_and_says_so(tmp_path, monkeypatch):
    import data.capture
    from model.detector import FaceDetector
    from helpers import bright_box_network

    camera = _FakeCamera(None, 0)
    monkeypatch.setattr(data.capture, "open_capture", lambda source: camera)
    detector = FaceDetector(bright_box_network(128, 4), 128, 4)
    with pytest.raises(ImageError, match=r"^0: no frame could be read; nothing written$"):
        detect.annotate_video(detector, 0, str(tmp_path / "camera.mp4"), progress=False)
    assert camera.released and os.listdir(tmp_path) == []
    # Without an output, a camera that fails at once is a run of 0 frames, not an error.
    summary = detect.annotate_video(detector, 0, None, progress=False)
    assert (summary.frames, summary.stopped) == (0, "read failed")


def test_the_drawn_frame_rate_starts_at_the_first_frames_and_is_smoothed():
    rate = detect._FrameRate(start=10.0)
    assert rate.tick(10.1) == pytest.approx(10.0)  # the first frame: its own rate
    # then 10% of each new frame's rate: 0.1 * 20 + 0.9 * 10
    assert rate.tick(10.15) == pytest.approx(11.0)
