"""data/capture.py (and capture.py, its command line) with a short MJPG video standing in for a camera: frames by timestamp,
sequential names continuing after existing files, nothing overwritten."""

import os

import cv2
import numpy as np
import pytest

from tools.capture import main
from data.capture import capture_frames, next_index, write_new_jpeg
from common.errors import ConfigError, ImageError

FPS = 10.0
FRAMES = 30  # 3 seconds


@pytest.fixture
def video(tmp_path):
    """A 3 s, 10 fps MJPG .avi whose frame i is filled with grey level 8 * i."""
    path = str(tmp_path / "camera.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    return path


def frame_number(path):
    """Which frame of the fixture video a saved JPEG holds (from its grey level)."""
    return int(round(cv2.imread(path).mean() / 8))


def test_saves_one_frame_per_interval_by_timestamp(video, tmp_path):
    out = str(tmp_path / "my_faces")
    result = capture_frames(video, out, interval=0.5, count=4, progress=False)
    assert [os.path.basename(p) for p in result.saved] == [
        "img_0001.jpg", "img_0002.jpg", "img_0003.jpg", "img_0004.jpg"]
    assert [frame_number(p) for p in result.saved] == [0, 5, 10, 15]
    assert result.stopped == "count"
    assert cv2.imread(result.saved[0]).shape == (48, 64, 3)
    assert sorted(os.listdir(out)) == [os.path.basename(p) for p in result.saved]  # no temp files


def test_numbering_continues_and_existing_files_are_kept(video, tmp_path):
    out = tmp_path / "my_faces"
    out.mkdir()
    (out / "img_0002.jpg").write_bytes(b"my earlier photo")
    (out / "notes.txt").write_text("keep")
    assert next_index(str(out)) == 3
    result = capture_frames(video, str(out), interval=1.0, count=0, progress=False)
    assert [os.path.basename(p) for p in result.saved] == ["img_0003.jpg", "img_0004.jpg", "img_0005.jpg"]
    assert [frame_number(p) for p in result.saved] == [0, 10, 20]
    assert result.stopped == "end of video" and result.frames_read == FRAMES
    assert (out / "img_0002.jpg").read_bytes() == b"my earlier photo"
    again = capture_frames(video, str(out), interval=2.0, count=1, progress=False)
    assert [os.path.basename(p) for p in again.saved] == ["img_0006.jpg"]


def test_write_new_jpeg_never_replaces_a_file(tmp_path):
    path = str(tmp_path / "img_0001.jpg")
    with open(path, "wb") as f:
        f.write(b"original")
    assert write_new_jpeg(path, np.zeros((8, 8, 3), np.uint8)) is False
    with open(path, "rb") as f:
        assert f.read() == b"original"
    assert os.listdir(tmp_path) == ["img_0001.jpg"]


def test_bad_sources_and_arguments(tmp_path):
    with pytest.raises(ImageError, match="missing.avi: video file not found"):
        capture_frames(str(tmp_path / "missing.avi"), str(tmp_path / "out"), progress=False)
    (tmp_path / "fake.avi").write_bytes(b"not a video")
    with pytest.raises(ImageError, match="fake.avi: cannot open as a video"):
        capture_frames(str(tmp_path / "fake.avi"), str(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="^interval=-1: "):
        capture_frames(str(tmp_path / "fake.avi"), str(tmp_path / "out"), interval=-1)


def test_cli_with_a_video_file(video, tmp_path, capsys):
    out = str(tmp_path / "my_faces")
    assert main(["--video", video, "--out", out, "--interval", "1.5", "--count", "5"]) == 0
    printed = capsys.readouterr().out
    assert "saved 2 frames to" in printed and "img_0001.jpg .. img_0002.jpg" in printed
    assert "labelme" in printed
    assert sorted(os.listdir(out)) == ["img_0001.jpg", "img_0002.jpg"]


def test_out_naming_a_file_and_bad_intervals_are_refused(video, tmp_path):
    taken = tmp_path / "notes.jpg"
    taken.write_bytes(b"not a folder")
    with pytest.raises(ConfigError, match=rf"^out='{taken}': is a file, not a folder"):
        capture_frames(video, str(taken), progress=False)
    assert taken.read_bytes() == b"not a folder"
    out = str(tmp_path / "out")
    for interval in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ConfigError, match=rf"^interval={interval!r}: must be a finite number"):
            capture_frames(video, out, interval=interval, progress=False)
    with pytest.raises(ConfigError, match=r"^prefix='\.\./up': must be a file name prefix"):
        capture_frames(video, out, prefix="../up", progress=False)
    assert not os.path.exists(out)  # nothing made for a refused run


def test_cli_errors_are_one_line(video, tmp_path):
    """As a user runs it: exit 2 and one line, no traceback, in the words of the flags."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    taken = tmp_path / "taken"
    taken.write_text("x")
    for flags, message in (
        (["--out", str(taken)], f"--out {taken}: is a file, not a folder for the frames"),
        (["--out", str(tmp_path / "o"), "--interval", "nan"],
         "--interval nan: must be a finite number of seconds >= 0"),
    ):
        done = subprocess.run([sys.executable, "tools/capture.py", "--video", video, *flags],
                              cwd=repo, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"capture.py: error: {message}"]
