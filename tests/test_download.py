"""The WIDER FACE downloader, against a local HTTP server on 127.0.0.1 (loopback only)."""

import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import zipfile

import pytest

from data.download import (
    download_file,
    download_wider,
    parse_checksum_overrides,
    read_checksum_manifest,
)
from data.wider import load_wider_split
from tools.download import main
from common.errors import ConfigError, DownloadError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GT = "0--Parade/0_Parade_a.jpg\n1\n10 20 30 40 0 0 0 0 0 0 \n0--Parade/0_Parade_b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"


class Server:
    """Serves `files` {url path: bytes}; honours `Range: bytes=N-` unless honor_range is False."""

    def __init__(self):
        self.files = {}
        self.honor_range = True
        self.cut_after = None  # send only this many body bytes, then drop the connection
        self.bytes_served = 0
        self.requests = []  # (path, Range header or None)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = owner.files.get(self.path)
                rng = self.headers.get("Range")
                owner.requests.append((self.path, rng))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and owner.honor_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut_after is not None:
                    body = body[:owner.cut_after]
                    owner.cut_after = None
                    self.close_connection = True
                self.wfile.write(body)
                owner.bytes_served += len(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def make_zip(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def wider_zips():
    """Small stand-ins for WIDER_val.zip and wider_face_split.zip with the official layout."""
    return {
        "WIDER_val.zip": make_zip({
            "WIDER_val/images/0--Parade/0_Parade_a.jpg": b"jpeg-a" * 100,
            "WIDER_val/images/0--Parade/0_Parade_b.jpg": b"jpeg-b" * 100,
        }),
        "wider_face_split.zip": make_zip({
            "wider_face_split/wider_face_val_bbx_gt.txt": GT,
            "wider_face_split/readme.txt": "readme",
        }),
    }


def test_download_wider_unpacks_into_layout_and_skips_present_parts(tmp_path, server, wider_zips):
    """Full fetch + unpack: load_wider_split reads the result; a second run fetches nothing."""
    for name, data in wider_zips.items():
        server.files[f"/mirror/{name}"] = data
    root = str(tmp_path / "WIDER")
    checksums = {name: sha(data) for name, data in wider_zips.items()}
    results = download_wider(root, ["val", "annotations"], mirrors=[server.url + "/mirror/"],
                             checksums=checksums, progress=False, timeout=5)
    assert [(r.part, r.action) for r in results] == [("val", "unpacked"), ("annotations", "unpacked")]
    assert os.path.isfile(os.path.join(root, "WIDER_val", "images", "0--Parade", "0_Parade_a.jpg"))
    assert os.path.isfile(os.path.join(root, "wider_face_split", "readme.txt"))
    assert sorted(os.listdir(root)) == ["WIDER_val", "wider_face_split"]  # zips, .part, staging gone
    split = load_wider_split(root, "val")
    assert [r.name for r in split.records] == ["0--Parade/0_Parade_a.jpg", "0--Parade/0_Parade_b.jpg"]

    requests = len(server.requests)
    again = download_wider(root, ["val", "annotations"], mirrors=[server.url + "/mirror/"],
                           progress=False, timeout=5)
    assert [r.action for r in again] == ["present", "present"]
    assert len(server.requests) == requests


def test_download_wider_tries_mirrors_in_order(tmp_path, server, wider_zips, closed_port_url):
    """A dead mirror and a mirror without the file are skipped; the third one delivers."""
    server.files["/good/wider_face_split.zip"] = wider_zips["wider_face_split.zip"]
    mirrors = [closed_port_url, server.url + "/empty", server.url + "/good"]
    download_wider(str(tmp_path), ["annotations"], mirrors=mirrors, checksums={"annotations": None},
                   progress=False, timeout=5, keep_archives=True)
    assert [path for path, _ in server.requests] == ["/empty/wider_face_split.zip",
                                                     "/good/wider_face_split.zip"]
    assert os.path.isfile(tmp_path / "wider_face_split.zip")  # keep_archives
    assert os.path.isfile(tmp_path / "wider_face_split" / "wider_face_val_bbx_gt.txt")


def test_resume_requests_only_the_remainder(tmp_path, server):
    data = os.urandom(300_000)
    server.files["/f.zip"] = data
    dest = tmp_path / "f.zip"
    (tmp_path / "f.zip.part").write_bytes(data[:123_456])
    download_file(server.url + "/f.zip", str(dest), sha256=sha(data), progress=False, timeout=5)
    assert dest.read_bytes() == data
    assert server.requests == [("/f.zip", "bytes=123456-")]
    assert server.bytes_served == len(data) - 123_456
    assert not (tmp_path / "f.zip.part").exists()


def test_interrupted_transfer_keeps_part_and_next_run_resumes(tmp_path, server):
    data = os.urandom(200_000)
    server.files["/f.zip"] = data
    server.cut_after = 70_000
    dest = tmp_path / "f.zip"
    with pytest.raises(DownloadError, match="run again to resume") as info:
        download_file(server.url + "/f.zip", str(dest), sha256=sha(data), progress=False, timeout=5)
    assert "\n" not in str(info.value)
    assert not dest.exists() and (tmp_path / "f.zip.part").stat().st_size == 70_000
    download_file(server.url + "/f.zip", str(dest), sha256=sha(data), progress=False, timeout=5)
    assert dest.read_bytes() == data
    assert server.requests[-1] == ("/f.zip", "bytes=70000-") and server.bytes_served == len(data)


def test_resume_against_server_without_range_restarts_cleanly(tmp_path, server):
    data = os.urandom(50_000)
    server.files["/f.zip"] = data
    server.honor_range = False
    (tmp_path / "f.zip.part").write_bytes(b"stale bytes from another file")
    download_file(server.url + "/f.zip", str(tmp_path / "f.zip"), sha256=sha(data), progress=False, timeout=5)
    assert (tmp_path / "f.zip").read_bytes() == data


def test_complete_part_file_is_finished_after_416(tmp_path, server):
    """A .part already holding every byte (crash before the rename) is verified and renamed."""
    data = os.urandom(10_000)
    server.files["/f.zip"] = data
    (tmp_path / "f.zip.part").write_bytes(data)
    download_file(server.url + "/f.zip", str(tmp_path / "f.zip"), sha256=sha(data), progress=False, timeout=5)
    assert (tmp_path / "f.zip").read_bytes() == data and server.bytes_served == 0


def test_checksum_mismatch_raises_and_leaves_no_file(tmp_path, server):
    server.files["/f.zip"] = b"not what you expected"
    dest = tmp_path / "f.zip"
    with pytest.raises(DownloadError, match="sha256 mismatch for f.zip") as info:
        download_file(server.url + "/f.zip", str(dest), sha256="0" * 64, progress=False, timeout=5)
    assert "\n" not in str(info.value)
    assert not dest.exists() and not (tmp_path / "f.zip.part").exists()


def test_download_wider_checksum_mismatch_leaves_nothing(tmp_path, server, wider_zips):
    server.files["/m/WIDER_val.zip"] = wider_zips["WIDER_val.zip"]
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_wider(str(tmp_path), ["val"], mirrors=[server.url + "/m"],
                       checksums={"WIDER_val.zip": "f" * 64}, progress=False, timeout=5)
    assert os.listdir(tmp_path) == []


def test_unreachable_mirror_gives_one_line_with_file_mirrors_and_advice(tmp_path, closed_port_url):
    with pytest.raises(DownloadError) as info:
        download_wider(str(tmp_path), ["val"], mirrors=[closed_port_url + "/a/", closed_port_url + "/b/"],
                       progress=False, timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not download WIDER_val.zip: tried ")
    assert f"{closed_port_url}/a/WIDER_val.zip" in message and f"{closed_port_url}/b/WIDER_val.zip" in message
    assert "refused" in message.lower()
    assert "http://shuoyang1213.me/WIDERFACE/" in message and str(tmp_path) in message
    assert "mirrors=[URL]" in message  # the advice names the mirror option
    assert not os.path.exists(tmp_path / "WIDER_val")


def test_cli_prints_one_error_line_and_exits_2(tmp_path, closed_port_url):
    process = subprocess.run(
        [sys.executable, "tools/download.py", "--root", str(tmp_path), "--parts", "annotations",
         "--mirror", closed_port_url, "--no-progress", "--timeout", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("download.py: error: could not download "
                                                   "wider_face_split.zip")


def test_cli_names_the_flag_of_a_bad_value(tmp_path):
    """The library names the value (sha256='val=xyz'); download.py shows it as the flag."""
    process = subprocess.run(
        [sys.executable, "tools/download.py", "--root", str(tmp_path), "--sha256", "val=xyz"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        "download.py: error: --sha256 val=xyz: expected NAME=HEX with a 64-digit SHA-256"]
    assert os.listdir(tmp_path) == []


def test_cli_downloads_with_manifest_checksums(tmp_path, server, wider_zips, capsys):
    server.files["/m/wider_face_split.zip"] = wider_zips["wider_face_split.zip"]
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text(f"# checksums\n{sha(wider_zips['wider_face_split.zip'])}  wider_face_split.zip\n")
    root = tmp_path / "root"
    assert main(["--root", str(root), "--parts", "annotations", "--mirror", server.url + "/m",
                 "--checksums", str(manifest), "--no-progress"]) == 0
    assert f"annotations: unpacked in {root / 'wider_face_split'}" in capsys.readouterr().out
    assert (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").read_text() == GT


def test_checksum_manifest_and_overrides_parse_and_reject_bad_lines(tmp_path):
    manifest = tmp_path / "sums.txt"
    manifest.write_text(f"{'A' * 64} *WIDER_val.zip\n\n")
    assert read_checksum_manifest(str(manifest)) == {"WIDER_val.zip": "a" * 64}
    manifest.write_text("deadbeef WIDER_val.zip\n")
    with pytest.raises(ConfigError, match=r"sums.txt:1: expected 'SHA256  FILENAME'"):
        read_checksum_manifest(str(manifest))
    assert parse_checksum_overrides([f"val={'B' * 64}"]) == {"val": "b" * 64}
    with pytest.raises(ConfigError, match="^sha256='val=xyz': expected NAME=HEX"):
        parse_checksum_overrides(["val=xyz"])


def test_unknown_part_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^parts=\['images'\]: unknown 'images'"):
        download_wider(str(tmp_path), ["images"], mirrors=[], progress=False)

