"""The one table of model formats (model/formats.py) and the modules that read it."""

import pytest

from model import contract
from model.export import default_export_path
from model.formats import BY_NAME, EXPORT_FORMATS, FORMATS_HELP, MODEL_FORMATS, format_of


def test_each_path_has_the_format_its_suffix_or_folder_says(tmp_path):
    assert format_of("a/model-0.61.keras").name == "keras"
    assert format_of("face.TFLITE").name == "tflite"
    assert format_of("face.onnx").name == "onnx"
    assert format_of(str(tmp_path)).name == "saved_model"
    assert format_of("weights.h5") is None


def test_export_writes_every_format_but_the_checkpoint_and_names_files_by_the_table():
    assert EXPORT_FORMATS == ("saved_model", "tflite", "onnx")
    assert default_export_path("r/model-0.61.keras", "onnx") == "r/model-0.61.onnx"
    assert default_export_path("r/model-0.61.keras", "tflite", int8=True) == "r/model-0.61_int8.tflite"
    assert default_export_path("r/model-0.61.keras", "saved_model") == "r/model-0.61_saved_model"
    for fmt in MODEL_FORMATS:
        assert fmt.description in FORMATS_HELP


@pytest.mark.parametrize("fmt", [f.name for f in MODEL_FORMATS])
def test_every_format_has_a_place_for_its_contract(fmt):
    assert fmt in contract._WRITERS
    assert fmt in contract._READERS or fmt == "saved_model"  # a folder: read in place
    assert BY_NAME[fmt].contract_place
