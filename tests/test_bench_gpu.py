"""benchmarks/bench_gpu.py --smoke: the GPU benchmark's every row runs on a CPU (toy sizes),
so the script is known to work before a GPU machine is at hand."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_run_prints_every_row_and_writes_the_json(tmp_path):
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "bench_gpu.py"), "--smoke",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert rows["smoke"] is True and rows["device"].startswith("CPU")
    # Smoke: the real preset's training row at one batch, in mixed_float16 (float32 steps
    # are every training test's).
    assert {(r["preset"], r["batch"], r["mixed_precision"]) for r in rows["training"]} == {
        ("real", 2, True)}
    assert all(r["images_per_s"] > 0 for r in rows["training"] + rows["pipeline"])
    assert [r["workers"] for r in rows["pipeline"]] == [2]
    assert set(rows["detect_ms"]) == {"keras", "tflite", "onnx"}
    assert all(ms > 0 for ms in rows["detect_ms"].values())
    table = run.stdout
    assert "| training images/s | real, batch 2, mixed_float16 |" in table
    assert "| pipeline images/s | real preset, 2 worker threads |" in table
    assert "| detect ms / image | real preset, onnx |" in table
