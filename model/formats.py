"""The one table of model file formats: what each is called, how its path looks, where it
keeps its contract, and whether `export.py` writes it (ultralytics' `export_formats()`).

    format_of("model-0.61.keras").name     # -> 'keras'
    format_of("face_saved_model/").name    # -> 'saved_model' (a folder)

`model.contract` (reading and writing the contract), `model.detector` (loading) and
`model.export` (writing) each keep one function per format name of this table; a new
format is a row here plus those functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ModelFormat:
    name: str  # the key the loaders, exporters and contract places are found by
    suffix: str  # the file's extension; "" for a folder
    description: str  # for help texts and messages
    contract_place: str  # where a file of this format keeps its contract (model/contract.py)
    exported: bool  # written by export.py (a .keras file is a checkpoint training writes)


MODEL_FORMATS = (
    ModelFormat("keras", ".keras", "a .keras checkpoint",
                "the zip entry face_detector_contract.json", exported=False),
    ModelFormat("saved_model", "", "a SavedModel folder",
                "assets.extra/face_detector_contract.json", exported=True),
    ModelFormat("tflite", ".tflite", "a .tflite file",
                "the TFLite metadata entry face_detector_contract", exported=True),
    ModelFormat("onnx", ".onnx", "an .onnx file",
                "the metadata_props entry face_detector_contract", exported=True),
)
BY_NAME = {f.name: f for f in MODEL_FORMATS}
EXPORT_FORMATS = tuple(f.name for f in MODEL_FORMATS if f.exported)
FORMATS_HELP = ", ".join(f.description for f in MODEL_FORMATS[:-1]) + " or " + \
    MODEL_FORMATS[-1].description


def format_of(path: str) -> Optional[ModelFormat]:
    """The format of the file or folder at `path` (a folder is a SavedModel), None for an
    extension no format has."""
    if os.path.isdir(path):
        return BY_NAME["saved_model"]
    ext = os.path.splitext(path)[1].lower()
    return next((f for f in MODEL_FORMATS if f.suffix and f.suffix == ext), None)
