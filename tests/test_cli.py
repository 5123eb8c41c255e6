"""cli.as_flag_message / run_main: library errors name values, the command line shows flags."""

import subprocess
import sys

import pytest

from common.cli import as_flag_message, run_main
from common.errors import ConfigError


@pytest.mark.parametrize("message, flags, shown", [
    ("grid_size=5: must divide input_size=224", (), "--grid-size 5: must divide input_size=224"),
    ("backbone_weights='none': no file", (), "--backbone-weights none: no file"),
    ("letterbox=False: m.keras was trained on letterboxed images", (),
     "--no-letterbox: m.keras was trained on letterboxed images"),
    ("augment=True: x", (), "--augment: x"),
    ("out='a/b': exists", ("out",), "--out a/b: exists"),
    # Not a Config field and not registered by the CLI: left in the library's words.
    ("out='a/b': exists", (), "out='a/b': exists"),
    # A message about a file is not about a parameter.
    ("/data/a=b.txt: line 3: bad", (), "/data/a=b.txt: line 3: bad"),
])
def test_leading_value_names_become_flags(message, flags, shown):
    assert as_flag_message(message, flags) == shown


def test_run_main_prints_the_flag_form_in_one_line_and_exits_2(capsys):
    def main():
        raise ConfigError("calibration_images=0: must be positive")

    with pytest.raises(SystemExit) as exit_:
        run_main(main, flags=("calibration_images",))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith("error: --calibration-images 0: must be positive\n")
    assert err.count("\n") == 1


def test_a_script_names_itself_by_file_name(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text("import sys; sys.path.insert(0, sys.argv[1])\n"
                      "from common.cli import run_main\nfrom common.errors import ConfigError\n"
                      "def main():\n    raise ConfigError('seed=-1: must be >= 0')\n"
                      "run_main(main)\n")
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, str(script), repo], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == "tool.py: error: --seed -1: must be >= 0\n"
