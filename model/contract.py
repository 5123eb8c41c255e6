"""The preprocessing contract a trained detector carries inside its own file.

A grid detector gives the right faces only when it is fed as it was trained: the same
input size, letterboxed (padded) or stretched as in training, RGB uint8 pixels; and its
grid is read with the geometry it was built with. These facts travel with the network, in
every format, so `detect.py`, `evaluate.py` and `export.py` read them from the model and
need no preprocessing flag:

    contract = ModelContract.from_config(config)           # when training saves a model
    save_model_atomically(model, "model.keras", contract=contract)
    read_contract("model.keras")   # -> ModelContract, or None for a file without one
    write_contract("face.tflite", contract)                # after an export

Where it lives, per format (each in the format's own place for user metadata, so every
runtime loads the file as it would without it):
- `.keras`: the zip entry `face_detector_contract.json` beside Keras' own `config.json`
  and `model.weights.h5`; `keras.models.load_model(path)` loads the network as ever, with
  no project import and no custom_objects, and leaves the entry alone.
- `.tflite`: a TFLite metadata entry (the flatbuffer's `metadata` table of named buffers,
  where the converter puts its own `min_runtime_version`).
- `.onnx`: a `metadata_props` entry (onnxruntime: `get_modelmeta().custom_metadata_map`).
- SavedModel folder: `assets.extra/face_detector_contract.json` (the folder TF Serving
  reserves for files beside the graph).
Under every name the content is the same JSON object, `ModelContract.to_json()`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Optional

from config import Config
from common.checks import check_type
from data.grid import GridSpec
from common.errors import CheckpointError, ConfigError
from common.files import atomic_path, atomic_write_bytes, atomic_write_text
from model.formats import format_of

CONTRACT_NAME = "face_detector_contract"  # TFLite metadata / ONNX metadata_props key
CONTRACT_FILE = CONTRACT_NAME + ".json"  # .keras zip entry / SavedModel assets.extra file
SAVED_MODEL_EXTRA = "assets.extra"
CONTRACT_VERSION = 1
# What this project's networks take (GridSpec's channel_order and input_dtype, from
# data.image, the one place it is stated) is stored in every contract so another runtime
# need not guess.


def _grids_text(grid_size: int, levels: int) -> str:
    """'40x40' (one grid), or '40x40 grid and 2 coarser levels' (for errors)."""
    if levels == 1:
        return f"{grid_size}x{grid_size}"
    return f"{grid_size}x{grid_size} grid and {levels - 1} coarser levels"


def _band_text(input_height: int) -> str:
    """'the whole square', or 'a band of 256 rows' (for errors)."""
    return "the whole square" if not input_height else f"a band of {int(input_height)} rows"


_GRID_FIELDS = tuple(f.name for f in dataclasses.fields(GridSpec))


@dataclass(frozen=True)
class ModelContract:
    """How to feed a trained detector and read its output: its grid, the threshold chosen
    for it on validation, and the layout version of this record.

    Attributes:
        grid: the input and output geometry the network was trained with
            (`data.grid.GridSpec`: input size, levels, letterbox or stretch, assignment
            rule, RGB uint8 input).
        score_threshold: the detection threshold chosen on validation (best F1), or the
            configured one; the default of `FaceDetector.detect` and detect.py for this
            model. None: not known.
        version: the layout of this record.

    `to_json` writes one flat JSON object, the grid's fields beside score_threshold and
    version: the keys of the files written before the grid was a record of its own
    (theirs lack centre_radius, which is then 0). `landmarks` is written only when true
    (absent: a model without landmarks, as every file before them), `input_height` only
    for a band input (absent: the square).
    """

    grid: GridSpec
    score_threshold: Optional[float] = None
    version: int = CONTRACT_VERSION

    def __post_init__(self):
        if not isinstance(self.grid, GridSpec):
            raise ConfigError(f"grid={self.grid!r}: must be a data.grid.GridSpec")
        threshold = self.score_threshold
        if threshold is not None:
            check_type("score_threshold", "float", threshold)
            if not 0.0 <= threshold <= 1.0:
                raise ConfigError(f"score_threshold={threshold!r}: must be in [0, 1]")

    @classmethod
    def from_config(cls, config: Config, score_threshold: Optional[float] = None
                    ) -> "ModelContract":
        """The contract of a network built and trained with `config`."""
        threshold = config.score_threshold if score_threshold is None else score_threshold
        return cls(config.grid_spec(), float(threshold))

    def replace(self, **changes) -> "ModelContract":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        values = dataclasses.asdict(self.grid)
        if not self.grid.landmarks:
            # Absent means False: a model without landmarks keeps the JSON of the files
            # written before landmarks existed, which those versions still read.
            del values["landmarks"]
        if not self.grid.input_height:  # absent: the square, as in every file before bands
            del values["input_height"]
        values.update(score_threshold=self.score_threshold, version=self.version)
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, text, source: str) -> "ModelContract":
        """Parse `to_json`'s text (str or bytes); CheckpointError naming `source`."""
        try:
            values = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{source}: its {CONTRACT_NAME} is not valid JSON ({e})"
                                  ) from None
        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: its {CONTRACT_NAME} is not a JSON object")
        if values.get("version") != CONTRACT_VERSION:
            raise CheckpointError(
                f"{source}: {CONTRACT_NAME} version {values.get('version')!r}; this version "
                f"of the project reads version {CONTRACT_VERSION}"
            )
        unknown = sorted(set(values) - set(_GRID_FIELDS) - {"score_threshold", "version"})
        if unknown:
            raise CheckpointError(f"{source}: unknown {CONTRACT_NAME} field(s) "
                                  f"{', '.join(unknown)}")
        try:
            grid = GridSpec(**{k: v for k, v in values.items() if k in _GRID_FIELDS})
            return cls(grid, values.get("score_threshold"), values["version"])
        except (TypeError, ConfigError) as e:
            raise CheckpointError(f"{source}: bad {CONTRACT_NAME} ({e})") from None

    def check_geometry(self, input_size: int, grid_size: int, source: str,
                       grid_levels: int = 1, landmarks: bool = False,
                       input_height: int = 0) -> None:
        """CheckpointError unless the network's own shapes are those the contract names
        (its grid, and whether its output has the landmark channels)."""
        if bool(landmarks) != self.grid.landmarks:
            raise CheckpointError(
                f"{source}: the network's output has {'' if landmarks else 'no '}landmark "
                f"channels, but its {CONTRACT_NAME} says landmarks={self.grid.landmarks}")
        if (input_size, grid_size, grid_levels) != (self.grid.input_size, self.grid.grid_size,
                                                    self.grid.grid_levels):
            raise CheckpointError(
                f"{source}: the network takes {input_size} px and gives a "
                f"{_grids_text(grid_size, grid_levels)}{' grid' if grid_levels == 1 else ''}, but its {CONTRACT_NAME} says "
                f"{self.grid.input_size} px, {_grids_text(self.grid.grid_size, self.grid.grid_levels)}"
            )
        if int(input_height) != self.grid.input_height:
            raise CheckpointError(
                f"{source}: the network's input is {_band_text(input_height)}, but its "
                f"{CONTRACT_NAME} says {_band_text(self.grid.input_height)}")

    def check_letterbox(self, letterbox: Optional[bool], source: str) -> None:
        """ConfigError naming both values when an explicit `letterbox` contradicts this."""
        if letterbox is not None and bool(letterbox) != self.grid.letterbox:
            trained = "letterboxed (padded)" if self.grid.letterbox else "stretched"
            raise ConfigError(
                f"letterbox={bool(letterbox)}: {source} was trained on {trained} images "
                f"(letterbox={self.grid.letterbox}, stored in the model); leave the setting out"
            )


# ------------------------------------------------------------------------- reading
def read_contract(path: str) -> Optional[ModelContract]:
    """The contract stored in a model file or SavedModel folder; None if it has none.

    Raises:
        CheckpointError: the file holds a contract that cannot be read (naming `path`).
    """
    fmt = format_of(path)
    if fmt is None:
        return None
    if fmt.name == "saved_model":
        extra = os.path.join(path, SAVED_MODEL_EXTRA, CONTRACT_FILE)
        if not os.path.isfile(extra):
            return None
        with open(extra, "rb") as f:
            return ModelContract.from_json(f.read(), extra)
    text = _READERS[fmt.name](path)
    return None if text is None else ModelContract.from_json(text, path)


def _tflite_entry(path: str) -> Optional[bytes]:
    with open(path, "rb") as f:
        return tflite_metadata(f.read(), CONTRACT_NAME)


def contract_beside(path: str) -> Optional[ModelContract]:
    """For files saved before models carried a contract: the one of the run's config.json
    in the same folder (training writes it beside the checkpoints; an export made beside
    its checkpoint finds it too), else None."""
    from config import run_config_beside

    config = run_config_beside(path)
    return None if config is None else ModelContract.from_config(config)


def _keras_entry(path: str) -> Optional[bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            if CONTRACT_FILE not in archive.namelist():
                return None
            return archive.read(CONTRACT_FILE)
    except (zipfile.BadZipFile, OSError):
        return None  # not a zip: the Keras loader reports the file in its own words


def tflite_metadata(model_bytes: bytes, name: str) -> Optional[bytes]:
    """The bytes of the TFLite metadata entry `name` (flatbuffer Model.metadata), or None."""
    from tensorflow.lite.python import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAsModel(model_bytes, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() is not None and _text(entry.Name()) == name:
                return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    except Exception:  # not a flatbuffer: the interpreter reports the file itself
        return None
    return None


def _onnx_metadata(path: str) -> Optional[str]:
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # not ONNX: the runtime reports the file itself
        return None
    for prop in model.metadata_props:
        if prop.key == CONTRACT_NAME:
            return prop.value
    return None


# ------------------------------------------------------------------------- writing
def write_contract(path: str, contract: ModelContract) -> None:
    """Store `contract` in the model file or SavedModel folder at `path`, atomically.

    The network inside is not touched: a `.keras` file gains a zip entry, a `.tflite`
    file a metadata entry, an `.onnx` file a metadata_props entry, a SavedModel folder
    a file in assets.extra/. An earlier contract is replaced.
    """
    text = contract.to_json()
    fmt = format_of(path)
    if fmt is None:
        ext = os.path.splitext(path)[1].lower()
        raise ConfigError(f"{path}: no place for a model contract in a '{ext}' file")
    _WRITERS[fmt.name](path, text)


def _write_saved_model_extra(path: str, text: str) -> None:
    folder = os.path.join(path, SAVED_MODEL_EXTRA)
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(os.path.join(folder, CONTRACT_FILE), text + "\n")


def _write_tflite_entry(path: str, text: str) -> None:
    with open(path, "rb") as f:
        data = with_tflite_metadata(f.read(), CONTRACT_NAME, text.encode())
    atomic_write_bytes(path, data)


def add_keras_entry(path: str, text: str) -> None:
    """Append the contract entry to a `.keras` zip that has none, in place.

    For a file not yet renamed into place (`save_model_atomically` calls it on its
    temporary): appending to a zip is not atomic. `write_contract` replaces atomically.
    """
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(CONTRACT_FILE, text)


def _rewrite_keras_entry(path: str, text: str) -> None:
    """The `.keras` file at `path` with its contract entry set to `text`, atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(path) as old, zipfile.ZipFile(tmp, "w") as new:
            for item in old.infolist():
                if item.filename != CONTRACT_FILE:
                    new.writestr(item, old.read(item.filename))
            new.writestr(CONTRACT_FILE, text)


def with_tflite_metadata(model_bytes: bytes, name: str, value: bytes) -> bytes:
    """The TFLite flatbuffer with the metadata entry `name` set to `value` (the rest as
    it was: operators, tensors and weights are copied unchanged)."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    kept = []
    for entry in model.metadata or []:
        if _text(entry.name) == name:
            # The replaced entry's buffer stays, emptied: buffer indices must not move.
            model.buffers[entry.buffer].data = None
        else:
            kept.append(entry)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = kept + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _write_onnx_metadata(path: str, text: str) -> None:
    import onnx

    model = onnx.load(path)
    for prop in list(model.metadata_props):
        if prop.key == CONTRACT_NAME:
            model.metadata_props.remove(prop)
    prop = model.metadata_props.add()
    prop.key, prop.value = CONTRACT_NAME, text
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)


# Where each format of model.formats keeps its contract (MODEL_FORMATS' contract_place).
_READERS = {"keras": _keras_entry, "tflite": _tflite_entry, "onnx": _onnx_metadata}
_WRITERS = {"keras": _rewrite_keras_entry, "tflite": _write_tflite_entry,
            "onnx": _write_onnx_metadata, "saved_model": _write_saved_model_extra}
