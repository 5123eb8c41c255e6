"""Fuzzing the annotation readers: WIDER text, labelme, COCO, YOLO, VOC and RetinaFace, each mutated
well over 100 ways (seeded, so a failure replays exactly).

For every mutant: no traceback (the reader returns, or raises a FaceDetectorError), every
error or problem message is one line naming the file, and every record kept is sane
(finite, within MAX_COORDINATE px, positive size, overlapping its image; WIDER flags in
their official ranges). Mutants of the kinds the readers must catch (huge / non-finite /
absurd / wrong-type values, boxes wholly outside, out-of-range flags, broken structure)
must give an error, or a counted problem with the bad entry absent: never a silent record.

The WIDER base is a small demo val file with the official quirks appended: the demo set is
not in git (data/demo/ is generated), so the fixture writes 12 images' worth with the same
generator, seed 0, in the official layout; a slice of the real val file is fuzzed too when
../shared holds it. Images are tiny, written once per module, and hard-linked per mutant.
"""

import json
import math
import os
import random
import shutil
import warnings

import numpy as np
import pytest

from data.boxes import xywh_to_xyxy
from data.formats import MAX_COORDINATE, MIN_BOX_SIZE, AnnotationWarning
from data.formats.coco import read_coco
from data.formats.labelme import read_labelme
from data.formats.voc import read_voc
from data.formats.yolo import read_yolo
from data.wider import ATTRIBUTE_MAX, DUMMY_LINE, read_wider_annotations
from common.errors import FaceDetectorError
from helpers import labelme_shape, write_image

SEED = 1234
# Values no reader may accept where a coordinate is (as JSON / XML / text tokens).
HUGE_INTS = ["9" * 400, "-" + "9" * 400, "9" * 5000]
ABSURD = ["1e12", "1e300", "-1e12", "1e39", "3.5e38", "123456789", "-100001"]
NOT_FINITE_TEXT = ["nan", "inf", "-inf", "NaN", "Infinity"]
SPELLINGS = ["1_0", "\u0661\u0662", "0x10", "abc", "12px", "--3"]  # '١٢': Arabic-Indic 12
# The quirks of the official files (module doc of data/wider.py), appended to the base.
QUIRKS = (
    "9--Quirks/9_Quirks_empty_1.jpg\n0\n" + DUMMY_LINE + "\n"
    "9--Quirks/9_Quirks_dummy_2.jpg\n1\n" + DUMMY_LINE + "\n"
    "9--Quirks/9_Quirks_bare_3.jpg\n0\n"
    "9--Quirks/9_Quirks_faces_4.jpg\n2\n"
    "10 12 30 40 2 1 1 1 2 1 \n"
    "50 60 7 9 0 0 0 0 0 0 \n"
)


# --- shared checks ---------------------------------------------------------------------------

def call(label, read):
    """(result, None, warnings) or (None, error, warnings); anything but a FaceDetectorError
    fails the test naming the mutant."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = read()
        except FaceDetectorError as e:
            return None, e, caught
        except Exception as e:  # noqa: BLE001 - the point of the suite
            pytest.fail(f"{label}: traceback {type(e).__name__}: {str(e)[:200]}")
    return result, None, caught


def check_message(label, message, names):
    """One line starting with one of `names` (the files' paths as the reader shows them)."""
    assert "\n" not in message, f"{label}: multi-line message {message!r}"
    assert message.startswith(tuple(names)), f"{label}: {message!r} names none of {names}"


def box_failures(records, sizes=None, wider=False):
    """Why records (boxes x1, y1, x2, y2) are not sane, as a list of strings (empty: sane)."""
    bad = []
    for r in records:
        b = np.asarray(r.boxes, np.float64)
        if b.size == 0:
            continue
        x, y, x2, y2 = b.T
        xywh = np.stack([x, y, x2 - x, y2 - y], axis=1)  # the readers bound these values
        if not np.isfinite(b).all() or (np.abs(xywh) > MAX_COORDINATE).any():
            bad.append(f"{r.name}: absurd {b.tolist()}")
        elif (x2 <= x).any() or (y2 <= y).any():
            bad.append(f"{r.name}: non-positive size {b.tolist()}")
        elif ((x2 <= 0) | (y2 <= 0)).any():
            bad.append(f"{r.name}: left of / above the image {b.tolist()}")
        elif sizes is not None:
            width, height = sizes[os.path.basename(r.path)]
            if ((x >= width) | (y >= height)).any():
                bad.append(f"{r.name}: outside the {width}x{height} image {b.tolist()}")
        if wider:
            a = np.asarray(r.attributes)
            if (a < 0).any() or (a > np.asarray(ATTRIBUTE_MAX)).any():
                bad.append(f"{r.name}: attributes out of range {a.tolist()}")
    return bad


def report_failures(label, report, names):
    """Check every kept problem message: one line, naming a file of the dataset."""
    for message in report.messages:
        check_message(label, message, names)


# --- WIDER -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_val_text(tmp_path_factory):
    """The demo generator's val annotation file (official layout) plus the official quirks."""
    from data.synthetic import make_demo_dataset

    root = str(tmp_path_factory.mktemp("demo"))
    make_demo_dataset(root, num_train=0, num_val=12, seed=0, progress=False)
    with open(os.path.join(root, "wider_face_split", "wider_face_val_bbx_gt.txt")) as f:
        return f.read() + QUIRKS


def _blocks(lines):
    """(path line index, count, first face index) of each block of a well-formed file."""
    blocks, i = [], 0
    while i < len(lines):
        count = int(lines[i + 1])
        start = i + 2
        if count == 0 and start < len(lines) and lines[start].split() == DUMMY_LINE.split():
            blocks.append((i, 0, start))
            i = start + 1
            continue
        blocks.append((i, count, start))
        i = start + count
    return blocks


def _face_oracle(tokens):
    """What the module rule of data/wider.py says of one face line: 'error', 'dropped' or
    ('kept', box). Written from the documented rule, independently of the reader."""
    if len(tokens) != 10:
        return "error"
    values = []
    for t in tokens:
        if not t.isascii() or "_" in t:
            return "error"
        try:
            values.append(float(t))
        except ValueError:
            return "error"
    if not all(math.isfinite(v) for v in values):
        return "error"
    if any(abs(v) > MAX_COORDINATE for v in values[:4]):
        return "error"
    for v, top in zip(values[4:], ATTRIBUTE_MAX):
        if v != int(v) or not 0 <= v <= top:
            return "error"
    x, y, w, h = values[:4]
    if w < MIN_BOX_SIZE or h < MIN_BOX_SIZE:  # 0, negative, or too small for float32 corners
        return "dropped"
    if x + w <= 0 or y + h <= 0:
        return "error"
    return ("kept", (x, y, w, h))


def wider_mutants(text, rng, n_values):
    """(kind, bytes, expectation): expectation None (only the generic checks), 'error',
    ('error', line) or ('ok', line, box or None, kept delta, dropped delta): the reader
    must succeed with that many more boxes kept / dropped (and `box` among the records)."""
    lines = text.splitlines()
    blocks = _blocks(lines)
    dummy_after_zero = {start for _, count, start in blocks if count == 0 and start < len(lines)
                        and lines[start].split() == DUMMY_LINE.split()}
    face_rows = [start + k for _, count, start in blocks for k in range(count)]
    out = []

    def emit(kind, new_lines, expectation, raw=None):
        data = raw if raw is not None else ("\n".join(new_lines) + "\n").encode()
        out.append((kind, data, expectation))

    # Structure: deleting any line breaks the block layout, except the dummy line of a
    # `0` block; duplicating any line always does.
    for k in rng.sample(range(len(lines)), min(25, len(lines))):
        expectation = ("ok", k + 1, None, 0, 0) if k in dummy_after_zero else "error"
        emit(f"delete line {k + 1}", lines[:k] + lines[k + 1:], expectation)
    for k in rng.sample(range(len(lines)), min(15, len(lines))):
        emit(f"duplicate line {k + 1}", lines[:k + 1] + lines[k:], "error")
    # Face counts changed: never to an equivalent form, except `0` + dummy -> `1` + dummy
    # (the official val file's form: the dummy line becomes a dropped box).
    for path_index, count, start in rng.sample(blocks, min(15, len(blocks))):
        choices = [str(count + 1), str(count + 3), "-1", "x", "1.5", "1_0", "9" * 30, "",
                   "+" + str(count), "\u0661"]
        for new in rng.sample(choices, 2) + ([str(count - 1)] if count > 1 else []):
            changed = list(lines)
            changed[path_index + 1] = new
            expectation = "error"
            if start in dummy_after_zero and new == "1":
                expectation = ("ok", start + 1, None, 0, 1)
            emit(f"count {count} -> {new!r} at line {path_index + 2}", changed, expectation)
    # One value of one face line replaced; the oracle (the documented rule) says what the
    # reader must do, and the kinds that used to pass silently must never be kept.
    pool = {"bad": HUGE_INTS + ABSURD + NOT_FINITE_TEXT + SPELLINGS,
            "plausible": ["12.5", "1e2", "+7", ".5", "0", "3", "1.0"]}
    for _ in range(n_values):
        row = rng.choice(face_rows)
        tokens = lines[row].split()
        before = _face_oracle(tokens)
        group = rng.choice(["bad", "bad", "plausible", "range", "size", "outside"])
        column = rng.randrange(10)
        if group == "range":  # an attribute flag outside its official range
            column = rng.randrange(4, 10)
            new = rng.choice([str(ATTRIBUTE_MAX[column - 4] + rng.randint(1, 3)), "-1", "0.5", "255"])
        elif group == "size":  # w or h <= 0: dropped and counted
            column = rng.choice([2, 3])
            new = rng.choice(["0", "-1", "-0", "0.0", "-3", "1e-7", "4e-320"])
        elif group == "outside":  # x or y negative enough to leave the image
            column = rng.choice([0, 1])
            new = str(-(float(tokens[column + 2]) + rng.randint(0, 50)))
        else:
            new = rng.choice(pool[group])
        tokens[column] = new
        after = _face_oracle(tokens)
        if group in ("bad", "range"):
            assert after == "error", (tokens, after)
        elif group in ("size", "outside"):
            assert after in ("error", "dropped"), (tokens, after)
        changed = list(lines)
        changed[row] = " ".join(tokens) + " "
        kind = f"line {row + 1} column {column + 1} -> {new[:20]!r} ({group})"
        if after == "error":
            emit(kind, changed, ("error", row + 1))
            continue
        kept = int(after != "dropped") - int(before != "dropped")
        box = after[1] if after != "dropped" else None
        emit(kind, changed, ("ok", row + 1, box, kept, -kept))
    # Bytes: flips, truncation, non-UTF-8, empty files, CRLF.
    raw = text.encode()
    for _ in range(40):
        flipped = bytearray(raw)
        k = rng.randrange(len(flipped))
        flipped[k] ^= 1 << rng.randrange(8)
        emit(f"bit flip at byte {k}", None, None, bytes(flipped))
    for _ in range(10):
        k = rng.randrange(len(raw))
        emit(f"truncated at byte {k}", None, None, raw[:k])
    for _ in range(6):
        k = rng.randrange(len(lines))
        encoded = [line.encode() for line in lines]
        encoded[k] += b"\xff\xfe"
        emit(f"non-UTF-8 bytes on line {k + 1}", None, ("error", k + 1), b"\n".join(encoded) + b"\n")
    for kind, data in (("empty file", b""), ("blank lines only", b"\n\n  \n"),
                       ("BOM only", b"\xef\xbb\xbf")):
        emit(kind, None, ("error", 1), data)
    emit("CRLF line ends", None, ("ok", 1, None, 0, 0), text.replace("\n", "\r\n").encode())
    return out


def run_wider_fuzz(tmp_path, text, n_values):
    base_path = str(tmp_path / "base_bbx_gt.txt")
    with open(base_path, "w") as f:
        f.write(text)
    base, error, _ = call("base", lambda: read_wider_annotations(base_path, "imgs"))
    assert error is None and not box_failures(base.records, wider=True)
    rng = random.Random(SEED)
    mutants = wider_mutants(text, rng, n_values)
    assert len(mutants) >= 100
    failures = []
    for number, (kind, data, expectation) in enumerate(mutants):
        path = str(tmp_path / f"mutant_{number:03d}_bbx_gt.txt")
        with open(path, "wb") as f:
            f.write(data)
        label = f"mutant {number} ({kind})"
        result, error, caught = call(label, lambda: read_wider_annotations(path, "imgs"))
        if error is not None:
            check_message(label, str(error), [path])
            if isinstance(expectation, tuple) and expectation[0] == "error":
                if not str(error).startswith(f"{path}:{expectation[1]}: "):
                    failures.append(f"{label}: expected an error at line {expectation[1]}, got {error}")
            elif isinstance(expectation, tuple):
                failures.append(f"{label}: expected success, got the error {error}")
            continue
        failures += [f"{label}: {b}" for b in box_failures(result.records, wider=True)]
        if expectation == "error" or isinstance(expectation, tuple) and expectation[0] == "error":
            failures.append(f"{label}: accepted silently ({result.num_images} images)")
            continue
        if expectation is None:
            continue
        _, line, box, kept, dropped = expectation
        if (result.num_boxes, result.dropped_boxes) != (base.num_boxes + kept, base.dropped_boxes + dropped):
            failures.append(f"{label}: {result.num_boxes} kept / {result.dropped_boxes} dropped, expected "
                            f"{base.num_boxes + kept} / {base.dropped_boxes + dropped}")
        # `box` is the mutated line's x y w h: the records hold its corners
        corners = None if box is None else xywh_to_xyxy(np.array([box], np.float64))[0]
        if box is not None and not any((r.boxes == corners).all(axis=1).any() for r in result.records):
            failures.append(f"{label}: box {box} not in the records")
        if result.dropped_boxes:
            shown = [w for w in caught if issubclass(w.category, AnnotationWarning)
                     and str(w.message).startswith(f"{path}: {result.dropped_boxes} face line")]
            if not shown:
                failures.append(f"{label}: the dropped box count is not shown in a warning")
            if dropped > 0 and line not in result.dropped_lines:
                failures.append(f"{label}: line {line} not in dropped_lines {result.dropped_lines}")
    assert not failures, f"{len(failures)} of {len(mutants)} mutants:\n" + "\n".join(failures[:20])
    return len(mutants)


def test_fuzz_wider_demo_file(tmp_path, demo_val_text):
    assert run_wider_fuzz(tmp_path, demo_val_text, n_values=200) >= 300


def test_fuzz_wider_real_val_slice(tmp_path, shared_val_annotations):
    """The first ~1,300 lines of the real val file (to a block boundary), a dropped box included."""
    with open(os.path.join(shared_val_annotations, "wider_face_val_bbx_gt.txt")) as f:
        lines = f.read().splitlines()
    end = next(i for i, _, _ in _blocks(lines) if i >= 1300)
    assert run_wider_fuzz(tmp_path, "\n".join(lines[:end]) + "\n", n_values=120) >= 200


# --- custom formats: tiny images, once per module ---------------------------------------------

SIZES = {"a.jpg": (64, 48), "b.jpg": (40, 40), "c.png": (32, 24)}
# name -> boxes (xywh) and ignore flags of the base datasets; all inside their image.
BOXES = {"a.jpg": ([[4, 5, 20, 16], [30.5, 10, 12, 18]], [False, False]),
         "b.jpg": ([[8, 8, 10, 12]], [True]),
         "c.png": ([], [])}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_images")
    for name, (w, h) in SIZES.items():
        write_image(folder / name, w, h)
    return str(folder)


def place_images(image_dir, folder):
    os.makedirs(folder, exist_ok=True)
    for name in SIZES:
        target = os.path.join(folder, name)
        try:
            os.link(os.path.join(image_dir, name), target)
        except OSError:
            shutil.copyfile(os.path.join(image_dir, name), target)


SENTINEL = "__FUZZ_VALUE__"


def json_text(doc, raw=None):
    """json.dumps(doc) with the SENTINEL string replaced by raw JSON text (deep nesting and
    huge integers cannot go through json.dumps)."""
    text = json.dumps(doc)
    return text if raw is None else text.replace(json.dumps(SENTINEL), raw)


def json_values():
    """(raw JSON text, kind) where a number is expected; every kind must be rejected."""
    deep = "[" * 100_000 + "]" * 100_000
    return ([(v, "huge int") for v in HUGE_INTS]
            + [(v, "absurd") for v in ("1e12", "1e300", "-1e12", "1e39", "123456789")]
            + [(v, "not finite") for v in ("NaN", "Infinity", "-Infinity", "1e400")]
            + [(v, "wrong type") for v in ('"12"', "[12]", "null", "{}", "true", '"0x10"')]
            + [(deep, "deep nesting")])


def text_mutants(raw, rng, n_flips=30, n_cuts=10):
    """Byte-level mutants of a file: bit flips, truncations, a non-UTF-8 byte."""
    out = []
    for _ in range(n_flips):
        data = bytearray(raw)
        k = rng.randrange(len(data))
        data[k] ^= 1 << rng.randrange(8)
        out.append((f"bit flip at byte {k}", bytes(data)))
    for _ in range(n_cuts):
        k = rng.randrange(len(raw))
        out.append((f"truncated at byte {k}", raw[:k]))
    k = rng.randrange(len(raw))
    out.append((f"byte 0xff inserted at {k}", raw[:k] + b"\xff" + raw[k:]))
    return out


def _set(doc, path, value):
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value


# --- labelme ---------------------------------------------------------------------------------

def labelme_doc(name):
    w, h = SIZES[name]
    boxes, ignore = BOXES[name]
    shapes = [labelme_shape(b, order=k, ignore=ig) for k, (b, ig) in enumerate(zip(boxes, ignore))]
    if name == "a.jpg":
        shapes.append({"label": "face", "points": [[1, 1], [5, 1], [3, 6]], "shape_type": "polygon"})
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": name,
            "imageData": None, "imageHeight": h, "imageWidth": w}


def test_fuzz_labelme(tmp_path, image_dir):
    rng = random.Random(SEED + 1)
    docs = {os.path.splitext(n)[0] + ".json": labelme_doc(n) for n in SIZES}

    def build(folder, target=None, text=None):
        place_images(image_dir, folder)
        for json_name, doc in docs.items():
            with open(os.path.join(folder, json_name), "wb") as f:
                f.write(text if json_name == target else json.dumps(doc).encode())
        return folder

    _, base = read_labelme(build(str(tmp_path / "base")))
    assert base.problems == 0 and base.faces == 3 and base.skipped_shapes == 1
    # (label, target json, text, must: 'shape' | 'no boxes' | 'file' | None (generic checks))
    mutants = []
    doc = docs["a.json"]
    for raw, kind in json_values():
        for shape in (0, 1):
            corner, axis = rng.randrange(2), rng.randrange(2)
            changed = json.loads(json.dumps(doc))
            changed["shapes"][shape]["points"][corner][axis] = SENTINEL
            must = "file" if kind == "deep nesting" else "shape"
            mutants.append((f"a.json shapes[{shape}].points[{corner}][{axis}] = {kind} {raw[:12]}",
                            "a.json", json_text(changed, raw).encode(), must))
        for key in ("points", "shapes", "imagePath", "imageWidth", "shape_type", "flags", "label"):
            changed = json.loads(json.dumps(doc))
            top_level = key in ("shapes", "imagePath", "imageWidth")
            (changed if top_level else changed["shapes"][0])[key] = SENTINEL
            must = {"points": "shape", "shapes": "file", "imagePath": "file"}.get(key)
            if key == "shapes" and raw == "[12]":
                must = "no boxes"  # a list of one non-object: that shape is the problem
            if kind == "deep nesting":
                must = "file"
            mutants.append((f"a.json {key} = {kind} {raw[:12]}", "a.json",
                            json_text(changed, raw).encode(), must))
    for key, must in (("points", "shape"), ("shapes", "file"), ("imagePath", "file"),
                      ("shape_type", None), ("imageWidth", None)):
        changed = json.loads(json.dumps(doc))
        _set(changed, ["shapes", 0, key] if key in ("points", "shape_type") else [key], KeyError)
        mutants.append((f"a.json without {key}", "a.json", json.dumps(changed).encode(), must))
    for corners in ([[1000, 5], [1010, 9]], [[-50, -40], [-30, -20]], [[5, 100], [9, 120]],
                    [[64, 0], [70, 10]]):
        changed = json.loads(json.dumps(doc))
        changed["shapes"][1]["points"] = corners
        mutants.append((f"a.json box wholly outside {corners}", "a.json",
                        json.dumps(changed).encode(), "shape"))
    for other in ("b.jpg", "c.png"):
        changed = json.loads(json.dumps(doc))
        changed["imagePath"] = other
        mutants.append((f"a.json imagePath names {other}", "a.json", json.dumps(changed).encode(), "file"))
    deep = "[" * 100_000 + "]" * 100_000
    for label, text in (("whole file deeply nested", deep), ("whole file a huge int", "9" * 5000),
                        ("empty file", ""), ("a list", "[]"), ("a string", '"x"')):
        mutants.append((f"a.json {label}", "a.json", text.encode(), "file"))
    for label, data in text_mutants(json.dumps(doc, indent=1).encode(), rng):
        mutants.append((f"a.json {label}", "a.json", data, None))
    assert len(mutants) >= 100

    failures = []
    for number, (label, target, text, must) in enumerate(mutants):
        folder = build(str(tmp_path / f"m{number:03d}"), target, text)
        result, error, _ = call(label, lambda: read_labelme(folder))
        if error is not None:
            failures.append(f"{label}: the reader raised {error} (a bad file is a problem)")
            continue
        records, report = result
        report_failures(label, report, list(docs) + list(SIZES))
        failures += [f"{label}: {b}" for b in box_failures(records, SIZES)]
        a = [r for r in records if r.name == "a.jpg"]
        if must == "file" and (a or report.problems <= base.problems):
            failures.append(f"{label}: the bad file was not left out and counted")
        if must == "no boxes" and (report.problems <= base.problems or len(a[0].boxes)):
            failures.append(f"{label}: the bad shape was not counted and left out")
        if must == "shape":
            if report.problems <= base.problems:
                failures.append(f"{label}: no problem counted")
            elif a and len(a[0].boxes) != 1:
                failures.append(f"{label}: {len(a[0].boxes)} boxes kept, expected the good one only")
        if len([r for r in records if r.name == "b.jpg"]) != 1:
            failures.append(f"{label}: b.jpg read {sum(r.name == 'b.jpg' for r in records)} times")
    assert not failures, f"{len(failures)} of {len(mutants)} mutants:\n" + "\n".join(failures[:20])


# --- COCO ------------------------------------------------------------------------------------

def coco_doc():
    images, annotations = [], []
    for i, name in enumerate(SIZES, start=1):
        w, h = SIZES[name]
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for box, ign in zip(*BOXES[name]):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 1,
                                "bbox": box, "iscrowd": int(ign), "area": box[2] * box[3]})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "person"}]}


def test_fuzz_coco(tmp_path, image_dir):
    rng = random.Random(SEED + 2)
    doc = coco_doc()
    n_ann = len(doc["annotations"])

    def build(folder, text):
        place_images(image_dir, os.path.join(folder, "images"))
        path = os.path.join(folder, "annotations", "instances.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(text)
        return path

    _, base = read_coco(build(str(tmp_path / "base"), json.dumps(doc).encode()))
    assert base.problems == 0 and base.faces == 3 and base.ignored == 1
    # (label, text, must: 'annotation' | 'image' | 'orphans' | 'error' | None (generic checks))
    mutants = []
    for raw, kind in json_values():
        k = rng.randrange(n_ann)
        for field in ("bbox", "image_id", "category_id", "iscrowd"):
            changed = json.loads(json.dumps(doc))
            if field == "bbox":
                changed["annotations"][k]["bbox"][rng.randrange(4)] = SENTINEL
            else:
                changed["annotations"][k][field] = SENTINEL
            must = "error" if kind == "deep nesting" else "annotation"
            if field == "iscrowd" and raw == "true":
                must = None  # JSON true is a valid crowd flag
            mutants.append((f"annotations[{k}].{field} = {kind} {raw[:12]}",
                            json_text(changed, raw).encode(), must))
        for field in ("width", "id", "file_name"):
            changed = json.loads(json.dumps(doc))
            changed["images"][0][field] = SENTINEL
            # A bad width falls back to the image header: nothing to report.
            must = {"width": None, "id": "image", "file_name": "image"}[field]
            if field == "id" and (raw.isdigit() and len(raw) <= 20 or raw.startswith('"')):
                must = "orphans"  # still an id: the annotations of id 1 are the problems
            if kind == "deep nesting":
                must = "error"
            mutants.append((f"images[0].{field} = {kind} {raw[:12]}", json_text(changed, raw).encode(), must))
    for field, value in (("category_id", 99), ("category_id", "1"), ("category_id", KeyError),
                         ("category_id", 1.5), ("iscrowd", "0"), ("iscrowd", "1"), ("iscrowd", 2),
                         ("iscrowd", -1), ("ignore", "yes"), ("image_id", 77), ("bbox", KeyError),
                         ("bbox", [1, 2, 3]), ("bbox", [1000, 5, 10, 10]), ("bbox", [-50, -40, 20, 20]),
                         ("bbox", [5, 48, 10, 10]), ("bbox", [1, 1, 0, 5]), ("bbox", [1, 1, 5, -5])):
        for k in rng.sample(range(n_ann), 2):
            changed = json.loads(json.dumps(doc))
            _set(changed, ["annotations", k, field], value)
            mutants.append((f"annotations[{k}].{field} = {value!r}", json.dumps(changed).encode(),
                            "annotation"))
    for key in ("images", "annotations"):
        for value in (KeyError, {}, "x", None):
            changed = json.loads(json.dumps(doc))
            _set(changed, [key], value)
            mutants.append((f"{key} = {value!r}", json.dumps(changed).encode(), "error"))
    changed = json.loads(json.dumps(doc))
    changed["categories"] = {"id": 1}
    mutants.append(("categories = an object", json.dumps(changed).encode(), "error"))
    for label, text in (("deeply nested file", "[" * 100_000 + "]" * 100_000), ("empty file", ""),
                        ("a huge int", "9" * 5000), ("not UTF-8", '{"images": "\xff"}')):
        data = text.encode("latin-1") if label == "not UTF-8" else text.encode()
        mutants.append((label, data, "error"))
    for label, data in text_mutants(json.dumps(doc, indent=1).encode(), rng, n_flips=40):
        mutants.append((label, data, None))
    assert len(mutants) >= 100

    failures = []
    for number, (label, text, must) in enumerate(mutants):
        path = build(str(tmp_path / f"m{number:03d}"), text)
        result, error, _ = call(label, lambda: read_coco(path))
        if error is not None:
            check_message(label, str(error), [path])
            if must not in ("error", None):
                failures.append(f"{label}: raised {error}, expected a counted problem")
            continue
        records, report = result
        report_failures(label, report, ["instances.json"])
        failures += [f"{label}: {b}" for b in box_failures(records, SIZES)]
        if must == "error":
            failures.append(f"{label}: accepted ({report.images} images)")
        elif must == "annotation" and (report.problems != base.problems + 1
                                       or report.faces != base.faces - 1):
            failures.append(f"{label}: {report.problems} problems, {report.faces} faces "
                            f"(expected the bad annotation counted and left out)")
        elif must == "orphans" and (report.problems != base.problems + 2 or report.faces != base.faces - 2):
            failures.append(f"{label}: a.jpg's two annotations were not counted and left out")
        elif must == "image" and (report.problems <= base.problems or report.images >= base.images):
            failures.append(f"{label}: the bad image entry was not counted and left out")
    assert not failures, f"{len(failures)} of {len(mutants)} mutants:\n" + "\n".join(failures[:20])


# --- YOLO ------------------------------------------------------------------------------------

def yolo_lines(name):
    w, h = SIZES[name]
    return [f"1 {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
            for x, y, bw, bh in BOXES[name][0]]


def test_fuzz_yolo(tmp_path, image_dir):
    rng = random.Random(SEED + 3)
    labels = {os.path.splitext(n)[0] + ".txt": yolo_lines(n) for n in SIZES if BOXES[n][0]}

    def build(folder, target=None, data=None, classes=b"person\nface\n"):
        place_images(image_dir, os.path.join(folder, "images"))
        os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
        with open(os.path.join(folder, "classes.txt"), "wb") as f:
            f.write(classes)
        for name, lines in labels.items():
            with open(os.path.join(folder, "labels", name), "wb") as f:
                f.write(data if name == target else ("\n".join(lines) + "\n").encode())
        return folder

    _, base = read_yolo(build(str(tmp_path / "base")))
    assert base.problems == 0 and base.faces == 3
    mutants = []  # (label, target, data, must: 'line' | None, classes, class filter)
    values = HUGE_INTS + ABSURD + NOT_FINITE_TEXT + SPELLINGS + ["-0.5", "1.5", "", "0", "-0"]
    lines = labels["a.txt"]
    for value in values:
        for column in rng.sample(range(5), 3):
            row = rng.randrange(len(lines))
            tokens = lines[row].split()
            tokens[column] = value
            changed = list(lines)
            changed[row] = " ".join(tokens)
            # Valid after all: a class id of up to 18 ASCII digits; a centre on the border.
            valid = (column == 0 and value.isascii() and value.isdigit() and len(value) <= 18
                     or column in (1, 2) and value in ("0", "-0"))
            must = None if valid else "line"
            mutants.append((f"a.txt:{row + 1} column {column + 1} = {value[:12]!r}", "a.txt",
                            ("\n".join(changed) + "\n").encode(), must, None, None))
    for row in range(len(lines)):
        tokens = lines[row].split()
        tokens[1], tokens[3] = "1.0000005", "0.0000001"  # within the tolerance, past the border
        changed = list(lines)
        changed[row] = " ".join(tokens)
        mutants.append((f"a.txt:{row + 1} box wholly past the right border", "a.txt",
                        ("\n".join(changed) + "\n").encode(), "line", None, None))
    bad_classes = "face\u00e9\n".encode("latin-1")
    mutants.append(("classes.txt not UTF-8, classes by name", None, None, "error", bad_classes, "face"))
    mutants.append(("classes.txt not UTF-8, classes by id", None, None, None, bad_classes, "1"))
    for k in range(len(lines)):
        mutants.append((f"a.txt line {k + 1} deleted", "a.txt",
                        ("\n".join(lines[:k] + lines[k + 1:]) + "\n").encode(), None, None, None))
        mutants.append((f"a.txt line {k + 1} duplicated", "a.txt",
                        ("\n".join(lines[:k + 1] + lines[k:]) + "\n").encode(), None, None, None))
    for label, data in text_mutants(("\n".join(lines) + "\n").encode(), rng, n_flips=40, n_cuts=10):
        mutants.append((f"a.txt {label}", "a.txt", data, None, None, None))
    mutants.append(("a.txt empty", "a.txt", b"", None, None, None))
    assert len(mutants) >= 100

    failures = []
    for number, (label, target, data, must, classes, wanted) in enumerate(mutants):
        folder = build(str(tmp_path / f"m{number:03d}"), target, data,
                       classes if classes is not None else b"person\nface\n")
        result, error, _ = call(label, lambda: read_yolo(folder, classes=wanted))
        if error is not None:
            check_message(label, str(error), [os.path.join(folder, "classes.txt")])
            if must != "error":
                failures.append(f"{label}: raised {error}")
            continue
        records, report = result
        report_failures(label, report, [os.path.join("labels", n) for n in labels]
                        + [os.path.join("images", n) for n in SIZES])
        failures += [f"{label}: {b}" for b in box_failures(records, SIZES)]
        if must == "error":
            failures.append(f"{label}: accepted")
        elif must == "line" and (report.problems != base.problems + 1 or report.faces != base.faces - 1):
            failures.append(f"{label}: {report.problems} problems, {report.faces} faces "
                            f"(expected the bad line counted and left out)")
    assert not failures, f"{len(failures)} of {len(mutants)} mutants:\n" + "\n".join(failures[:20])


# --- VOC -------------------------------------------------------------------------------------

def voc_text(name, corners=None, size=None, extra=""):
    """A VOC document of `name`'s boxes; `corners` replaces the first object's four texts."""
    w, h = SIZES[name] if size is None else size
    objects = []
    for k, (box, ign) in enumerate(zip(*BOXES[name])):
        x, y, bw, bh = box
        values = (x, y, x + bw, y + bh) if k or corners is None else corners
        tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), values))
        objects.append(f"<object><name>face</name><difficult>{int(ign)}</difficult>"
                       f"<bndbox>{tags}</bndbox>{extra if k == 0 else ''}</object>")
    return "\n".join(["<annotation>", f"<filename>{name}</filename>",
                      f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
                      *objects, "</annotation>"]) + "\n"


def test_fuzz_voc(tmp_path, image_dir):
    rng = random.Random(SEED + 4)
    files = {os.path.splitext(n)[0] + ".xml": voc_text(n) for n in SIZES}

    def build(folder, target=None, data=None):
        place_images(image_dir, os.path.join(folder, "images"))
        os.makedirs(os.path.join(folder, "annotations"), exist_ok=True)
        for name, text in files.items():
            with open(os.path.join(folder, "annotations", name), "wb") as f:
                f.write(data if name == target else text.encode())
        return folder

    _, base = read_voc(build(str(tmp_path / "base")))
    assert base.problems == 0 and base.faces == 3
    good = (4, 5, 24, 21)  # a.jpg's first box as corners
    mutants = []  # (label, data, must: 'object' | 'file' | None)
    for value in HUGE_INTS + ABSURD + NOT_FINITE_TEXT + SPELLINGS + ["", "  ", "-1e6", "1e-300x"]:
        for k in rng.sample(range(4), 2):
            corners = list(good)
            corners[k] = value
            mutants.append((f"a.xml corner {k} = {value[:12]!r}", voc_text("a.jpg", corners).encode(),
                            "object"))
    for corners in ((100, 5, 120, 20), (-50, -40, -30, -20), (5, 60, 9, 70), (65.5, 1, 70, 9)):
        mutants.append((f"a.xml box wholly outside {corners}", voc_text("a.jpg", corners).encode(),
                        "object"))
    # A corrupt <size> falls back to the image file: the boxes are still checked against it.
    for size in ((1e300, 48), ("nan", 48), (-5, 48), (0, 0), ("abc", "x"), (1e6, 1e6), (64, "inf")):
        mutants.append((f"a.xml <size> {size}", voc_text("a.jpg", size=size).encode(), None))
        mutants.append((f"a.xml <size> {size} and a box outside",
                        voc_text("a.jpg", (100, 5, 120, 20), size=size).encode(), "object"))
    for flag in ("2", "yes", "-1", "0.5", "1_0"):
        text = voc_text("a.jpg").replace("<difficult>0</difficult>", f"<difficult>{flag}</difficult>", 1)
        mutants.append((f"a.xml <difficult>{flag}", text.encode(), "object"))
    for tag in ("bndbox", "xmin", "ymax"):
        text = voc_text("a.jpg")
        start = text.index(f"<{tag}>")
        end = text.index(f"</{tag}>") + len(f"</{tag}>")
        mutants.append((f"a.xml first <{tag}> removed", (text[:start] + text[end:]).encode(), "object"))
    deep = "<a>" * 100_000 + "</a>" * 100_000
    mutants.append(("a.xml deep nesting in an object", voc_text("a.jpg", extra=deep).encode(), None))
    for encoding in ("cp932", "utf-32", "no-such-encoding", "utf-16"):
        text = f'<?xml version="1.0" encoding="{encoding}"?>\n' + voc_text("a.jpg")
        mutants.append((f"a.xml declared {encoding}", text.encode(), "file"))
    laughs = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa">'
              + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("abcd", "bcde"))
              + "]>" + voc_text("a.jpg").replace("<name>face</name>", "<name>&e;</name>", 1))
    mutants.append(("a.xml billion laughs", laughs.encode(), None))
    mutants.append(("a.xml empty", b"", "file"))
    mutants.append(("a.xml not UTF-8", voc_text("a.jpg").replace("face", "f\xe9ce").encode("latin-1"), "file"))
    for label, data in text_mutants(voc_text("a.jpg").encode(), rng, n_flips=40, n_cuts=10):
        mutants.append((f"a.xml {label}", data, None))
    assert len(mutants) >= 100

    failures = []
    for number, (label, data, must) in enumerate(mutants):
        folder = build(str(tmp_path / f"m{number:03d}"), "a.xml", data)
        result, error, _ = call(label, lambda: read_voc(folder))
        if error is not None:
            failures.append(f"{label}: the reader raised {error} (a bad file is a problem)")
            continue
        records, report = result
        report_failures(label, report, [os.path.join("annotations", n) for n in files])
        failures += [f"{label}: {b}" for b in box_failures(records, SIZES)]
        a = [r for r in records if r.name == "a.jpg"]
        if must == "file" and (a or report.problems <= base.problems):
            failures.append(f"{label}: the bad file was not left out and counted")
        elif must == "object" and (report.problems != base.problems + 1 or report.faces != base.faces - 1):
            failures.append(f"{label}: {report.problems} problems, {report.faces} faces "
                            f"(expected the bad object counted and left out)")
    assert not failures, f"{len(failures)} of {len(mutants)} mutants:\n" + "\n".join(failures[:20])


# --- issue 22: nothing outside the dataset is read; no nonsense loads silently ------------------

# Image names that leave the dataset: absolute, climbing out with '..', the process' own files.
HOSTILE_NAMES = ["/etc/passwd", "../../../../etc/passwd", "/proc/self/environ",
                 "images/../../../outside.jpg", "..\\..\\outside.jpg", "a/../../outside.jpg"]


@pytest.fixture
def outside_reads(tmp_path):
    """(outside folder, list of its paths opened or linked while the fixture is active): a
    Python audit hook (it cannot be removed, so it only records while `active`)."""
    import sys

    outside = tmp_path / "outside"
    outside.mkdir()
    write_image(outside / "outside.jpg", 32, 24)
    state = {"active": True, "seen": [], "roots": (str(outside), "/etc/", "/proc/")}

    def hook(event, args):
        if state["active"] and event in ("open", "os.link", "shutil.copyfile"):
            for value in args[:2]:
                if isinstance(value, (str, bytes, os.PathLike)):
                    text = os.fsdecode(value)
                    if text.startswith(state["roots"]):
                        state["seen"].append(f"{event} {text}")

    sys.addaudithook(hook)
    yield outside, state["seen"]
    state["active"] = False


def _hostile_names(rng, outside):
    """The hostile names plus absolute paths of a real photo outside, in a seeded order."""
    names = HOSTILE_NAMES + [str(outside / "outside.jpg"), str(outside / "outside.jpg").replace("/", "\\")]
    rng.shuffle(names)
    return names


def test_fuzz_image_paths_outside_the_dataset_are_refused_never_read(tmp_path, image_dir, outside_reads):
    """COCO file_name, VOC <filename> and WIDER image paths leading out (absolute, '..', or
    a symlink inside the folder pointing out) are refused naming the file and entry, and
    convert.py neither reads, links nor copies the outside file (the audit hook sees every
    open and link)."""
    from tools.convert import main as convert_main
    from data.wider import load_wider_split

    outside, seen = outside_reads
    rng = random.Random(SEED + 22)
    failures = []
    for k, name in enumerate(_hostile_names(rng, outside)):
        # COCO: the entry is reported, the rest of the file loads.
        doc = coco_doc()
        doc["images"][1]["file_name"] = name
        del doc["images"][1]["width"]  # the header would be read for the size
        root = tmp_path / f"coco{k}"
        place_images(image_dir, str(root / "images"))
        (root / "annotations").mkdir()
        (root / "annotations" / "instances.json").write_text(json.dumps(doc))
        result, error, _ = call(f"coco {name}", lambda: read_coco(str(root / "annotations" / "instances.json")))
        if error is not None or result.report.problems != 1 or len(result.records) != 2:
            failures.append(f"coco {name}: {error or result.report.summary()}")
        else:
            check_message(name, result.report.messages[0], ["instances.json: images[1].file_name"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnnotationWarning)
            convert_main(["--input", str(root), "--format", "coco", "--out", str(tmp_path / f"out{k}")])
        # VOC: the file is reported and left out.
        voc = tmp_path / f"voc{k}"
        place_images(image_dir, str(voc / "images"))
        (voc / "annotations").mkdir()
        (voc / "annotations" / "a.xml").write_text(
            f"<annotation><filename>{name}</filename><object><name>face</name><bndbox><xmin>1"
            f"</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
        result, error, _ = call(f"voc {name}", lambda: read_voc(str(voc)))
        if error is not None or result.report.problems != 1 or result.records:
            failures.append(f"voc {name}: {error or result.report.summary()}")
        else:
            check_message(name, result.report.messages[0], [os.path.join("annotations", "a.xml")])
        # WIDER: a path leading out is a malformed line, named with its line number.
        wider = tmp_path / f"wider{k}"
        images, gt = wider / "WIDER_train" / "images", wider / "wider_face_split"
        place_images(image_dir, str(images / "0--x"))
        gt.mkdir(parents=True)
        text = "0--x/a.jpg\n1\n4 5 20 16 0 0 0 0 0 0\n" + name.replace("\\", "/") + ".jpg\n0\n"
        (gt / "wider_face_train_bbx_gt.txt").write_text(text)
        _, error, _ = call(f"wider {name}", lambda: load_wider_split(str(wider), "train"))
        if error is None or "expected an image path inside the images folder" not in str(error):
            failures.append(f"wider {name}: {error}")
        else:
            check_message(name, str(error), [str(gt / "wider_face_train_bbx_gt.txt") + ":4: "])
    # A symlink inside the image folder that leads out is refused too (COCO, VOC, WIDER).
    link_root = tmp_path / "links"
    place_images(image_dir, str(link_root / "images"))
    os.symlink(outside / "outside.jpg", link_root / "images" / "link.jpg")
    doc = coco_doc()
    doc["images"][1]["file_name"] = "link.jpg"
    (link_root / "instances.json").write_text(json.dumps(doc))
    records, report = read_coco(str(link_root / "instances.json"), str(link_root / "images"))
    assert [r.name for r in records] == ["a.jpg", "c.png"] and report.problems == 1
    wider = tmp_path / "wider_link"
    (wider / "WIDER_val" / "images" / "0--x").mkdir(parents=True)
    os.symlink(outside / "outside.jpg", wider / "WIDER_val" / "images" / "0--x" / "l.jpg")
    (wider / "wider_face_split").mkdir()
    (wider / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("0--x/l.jpg\n1\n1 1 5 5 0 0 0 0 0 0\n")
    with pytest.raises(FaceDetectorError, match=r"wider_face_val_bbx_gt.txt:1: 0--x/l.jpg resolves to .*outside"):
        load_wider_split(str(wider), "val")
    assert not failures, "\n".join(failures)
    assert not seen, f"files outside the dataset were touched: {seen[:5]}"


def _wider_root(tmp_path, text, size=(120, 90), split="train"):
    """A WIDER root with one photo 0--x/a.jpg of `size` and the annotation `text`."""
    root = tmp_path / "wider"
    write_image(root / f"WIDER_{split}" / "images" / "0--x" / "a.jpg", *size)
    (root / "wider_face_split").mkdir()
    path = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    path.write_text(text)
    return str(root), str(path)


@pytest.mark.parametrize("box", ["500 500 20 20", "120 10 5 5", "10 90 5 5"])
def test_wider_box_wholly_outside_its_image_is_dropped_naming_its_line(tmp_path, box):
    """`500 500 20 20` on a 120x90 photo: left out with one warning naming the file and
    line, counted, and not converted; the good box of the same image stays."""
    from data.convert import convert_to_wider
    from data.wider import load_wider_split

    root, path = _wider_root(tmp_path, f"0--x/a.jpg\n3\n1 1 0 5 0 0 0 0 0 0\n"
                                       f"{box} 0 0 0 0 0 0\n4 5 20 16 0 0 0 0 0 0\n")
    with pytest.warns(AnnotationWarning) as caught:
        wider = load_wider_split(root, "train")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"{path}: 1 face box wholly outside the image left out (line 4: box ")
               and "120x90 image" in m for m in messages), messages
    assert wider.dropped_boxes == 2 and wider.dropped_lines == [3, 4]
    assert wider.records[0].boxes.tolist() == [[4, 5, 24, 21]]
    out = convert_to_wider(wider.records, str(tmp_path / "out"), progress=False)
    assert read_wider_annotations(out.annotation_path, out.images_dir).num_boxes == 1


def test_wider_image_listed_twice_is_refused_naming_both_lines(tmp_path):
    text = "0--x/a.jpg\n1\n4 5 20 16 0 0 0 0 0 0\n0--x/b.jpg\n0\n0--x/a.jpg\n1\n8 8 9 9 0 0 0 0 0 0\n"
    root, path = _wider_root(tmp_path, text)
    with pytest.raises(FaceDetectorError) as info:
        read_wider_annotations(path, root)
    message = str(info.value)
    assert message.startswith(f"{path}:6: expected a new image path (0--x/a.jpg is listed twice: "
                              f"its first block starts at line 1)") and "\n" not in message


@pytest.mark.parametrize("fmt", ["coco", "voc", "wider", "yolo", "labelme"])
def test_fuzz_boxes_under_a_hundredth_of_a_pixel_are_refused_and_never_converted(tmp_path, image_dir, fmt):
    """Widths of 1e-7 px (float32 corners collapse them: convert.py wrote width 0) and a
    YOLO width of 4e-320 (a subnormal: written negative) are refused in every format, with
    the file and line; the converted file holds only positive sizes."""
    from data.convert import convert_to_wider
    from data.formats.labelme import read_labelme
    from data.wider import load_wider_split

    rng = random.Random(SEED + 23)
    tiny = rng.choice(["1e-7", "4e-7", "9e-8"]) if fmt != "yolo" else rng.choice(["4e-320", "1e-9", "5e-324"])
    root = tmp_path / fmt
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if fmt == "coco":
            doc = coco_doc()
            doc["annotations"][0]["bbox"][2] = float(tiny)
            place_images(image_dir, str(root / "images"))
            (root / "instances.json").write_text(json.dumps(doc))
            records, report = read_coco(str(root / "instances.json"))
            assert report.messages == [f"instances.json: annotations[0].bbox: w={float(tiny):g} px is "
                                       f"under 0.01 px (no face is that small)"]
        elif fmt == "voc":
            place_images(image_dir, str(root / "images"))
            (root / "annotations").mkdir()
            (root / "annotations" / "a.xml").write_text(
                f"<annotation><filename>a.jpg</filename><object><name>face</name><bndbox><xmin>4"
                f"</xmin><ymin>5</ymin><xmax>{4 + float(tiny)!r}</xmax><ymax>20</ymax></bndbox></object>"
                f"<object><name>face</name><bndbox><xmin>4</xmin><ymin>5</ymin><xmax>24</xmax>"
                f"<ymax>20</ymax></bndbox></object></annotation>")
            records, report = read_voc(str(root))
            assert report.problems == 1 and report.messages[0].startswith(
                os.path.join("annotations", "a.xml") + ": object 1 <bndbox>: w=")
        elif fmt == "wider":
            root, _ = _wider_root(tmp_path, f"0--x/a.jpg\n2\n4 5 {tiny} 16 0 0 0 0 0 0\n"
                                            f"4 5 20 16 0 0 0 0 0 0\n")
            records = load_wider_split(root, "train").records
            assert any("1 face line with w or h under 0.01 px left out (line 3)" in str(w.message)
                       for w in caught)
        elif fmt == "yolo":
            place_images(image_dir, str(root / "images"))
            (root / "labels").mkdir()
            (root / "labels" / "a.txt").write_text(f"0 0.5 0.5 {tiny} 0.2\n0 0.5 0.5 0.2 0.2\n")
            records, report = read_yolo(str(root))
            assert report.messages[0].startswith(os.path.join("labels", "a.txt") + ":1: w=")
        else:
            place_images(image_dir, str(root))
            shapes = [{"label": "face", "points": [[4, 5], [4 + float(tiny), 20]], "shape_type": "rectangle"},
                      {"label": "face", "points": [[4, 5], [24, 20]], "shape_type": "rectangle"}]
            (root / "a.json").write_text(json.dumps({"shapes": shapes, "imagePath": "a.jpg",
                                                     "imageWidth": 64, "imageHeight": 48}))
            records, report = read_labelme(str(root))
            assert report.problems == 1 and report.messages[0].startswith("a.json: shapes[0].points: w=")
    kept = [r for r in records if r.name.endswith("a.jpg")]
    assert len(kept) == 1 and len(kept[0].boxes) == 1
    out = convert_to_wider(records, str(tmp_path / "out"), progress=False)
    back = read_wider_annotations(out.annotation_path, out.images_dir)
    sizes = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in back.records])
    assert (sizes > 0).all()


def test_yolo_header_over_max_image_pixels_is_reported_not_scaled(tmp_path):
    """A JPEG header claiming 65000x65000 (over --max-image-pixels) used to scale the boxes
    to that size silently: now the image is a problem naming it and the limit."""
    from data.datasets import load_records
    from helpers import claim_size

    root = tmp_path / "yolo"
    good = write_image(root / "images" / "good.jpg", 40, 30)
    data = claim_size(bytearray(open(good, "rb").read()), "jpg", 65000, 65000)
    (root / "images" / "huge.jpg").write_bytes(bytes(data))
    (root / "labels").mkdir()
    for stem in ("good", "huge"):
        (root / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    records, report = read_yolo(str(root))
    assert [r.name for r in records] == ["good.jpg"]
    assert report.messages == [os.path.join("images", "huge.jpg") + ": 65000x65000 image (4225.0 "
                               "megapixels) is over max_image_pixels=100000000 (100 megapixels); not decoded"]
    records, report = read_yolo(str(root), max_pixels=65000 * 65000)  # a raised limit is honoured
    assert len(records) == 2 and report.problems == 0
    with pytest.warns(AnnotationWarning, match="huge.jpg: 65000x65000 image"):
        assert len(load_records(str(root), fmt="yolo", holdout=False, max_pixels=40 * 30)) == 1


@pytest.mark.parametrize("fmt", ["coco", "auto"])
@pytest.mark.parametrize("as_file", [False, True])
def test_coco_json_nested_50000_deep_is_named_not_found_none(tmp_path, fmt, as_file):
    """A COCO .json nested 50,000 deep used to read as 'found none' (or an unknown format):
    the message now names the file and why json could not parse it."""
    from data.datasets import load_records

    path = tmp_path / "annotations" / "instances.json"
    path.parent.mkdir()
    path.write_text('{"images": ' + "[" * 50_000 + "]" * 50_000 + ', "annotations": []}')
    with pytest.raises(FaceDetectorError) as info:
        load_records(str(path if as_file else tmp_path), fmt=fmt, holdout=False)
    message = str(info.value)
    assert "\n" not in message and f"{path}: not usable JSON (nested deeper than" in message
    assert "found none" not in message


# --- RetinaFace ------------------------------------------------------------------------------

# The base boxes (xywh) of the RetinaFace fuzz, its own: other fuzz tests change BOXES' lists.
RETINAFACE_BOXES = {"a.jpg": [[4, 5, 20, 16], [30.5, 10, 12, 18]], "b.jpg": [[8, 8, 10, 12]],
                    "c.png": []}


def retinaface_text(boxes=RETINAFACE_BOXES):
    """A RetinaFace label file of the base boxes (xywh), each with five points inside it."""
    lines = []
    for name, faces in boxes.items():
        lines.append(f"# {name} {SIZES[name][0]} {SIZES[name][1]}")
        for x, y, w, h in faces:
            points = [(x + w * fx, y + h * fy) for fx, fy in
                      ((.3, .4), (.7, .4), (.5, .6), (.35, .8), (.65, .8))]
            lines.append(" ".join(map(str, [x, y, w, h] + [v for p in points for v in (*p, 0.0)]
                                      + [0.9])))
    return "\n".join(lines) + "\n"


def landmark_failures(records):
    """Why records' points are not sane: each finite within MAX_COORDINATE, or NaN in both."""
    bad = []
    for r in records:
        p = np.asarray(r.landmarks, np.float64)
        if p.shape != (len(r.boxes), 5, 2):
            bad.append(f"{r.name}: landmarks of shape {p.shape}")
            continue
        finite = np.isfinite(p)
        if (finite.any(axis=2) != finite.all(axis=2)).any() or np.isinf(p).any():
            bad.append(f"{r.name}: half-absent or infinite point")
        elif (np.abs(p[finite]) > MAX_COORDINATE).any():
            bad.append(f"{r.name}: absurd point")
    return bad


def test_fuzz_retinaface(tmp_path, image_dir):
    """Every value of a face line replaced by hostile text, lines deleted and duplicated,
    bits flipped, truncations: no traceback, one-line messages naming the file and line,
    sane boxes and points; a bad value costs exactly its line."""
    from data.formats.retinaface import read_retinaface

    rng = random.Random(SEED + 21)

    def build(folder, data):
        place_images(image_dir, os.path.join(folder, "images"))
        path = os.path.join(folder, "label.txt")
        with open(path, "wb") as f:
            f.write(data)
        return path

    text = retinaface_text()
    _, base = read_retinaface(build(str(tmp_path / "base"), text.encode()))
    assert base.problems == 0 and base.faces == 3
    lines = text.splitlines()
    face_rows = [k for k, line in enumerate(lines) if not line.startswith("#")]
    mutants = []  # (label, data, must: 'line' | None)
    values = HUGE_INTS + ABSURD + NOT_FINITE_TEXT + SPELLINGS + ["", "0", "-5"]
    for value in values:
        for column in rng.sample(range(20), 4):
            row = rng.choice(face_rows)
            tokens = lines[row].split()
            tokens[column] = value
            changed = list(lines)
            changed[row] = " ".join(tokens)
            plain = (value.isascii() and "_" not in value and value.strip() != ""
                     and _finite_float(value))
            # Valid after all: a visibility flag or score that is a plain finite number; an
            # x or y of 0 (still overlapping); a point coordinate of 0 or -5 (any place).
            flag = column >= 4 and (column - 4) % 3 == 2 or column == 19
            point = 4 <= column < 19 and not flag
            valid = (plain and flag) or (value == "0" and column in (0, 1)) or (
                point and value in ("0", "-5"))
            mutants.append((f"line {row + 1} column {column + 1} = {value[:12]!r}",
                            ("\n".join(changed) + "\n").encode(), None if valid else "line"))
    for k in face_rows:
        mutants.append((f"line {k + 1} deleted", ("\n".join(lines[:k] + lines[k + 1:]) + "\n").encode(), None))
        mutants.append((f"line {k + 1} duplicated", ("\n".join(lines[:k + 1] + lines[k:]) + "\n").encode(), None))
    for label, data in text_mutants(text.encode(), rng, n_flips=40, n_cuts=10):
        mutants.append((label, data, None))
    mutants.append(("empty", b"", None))
    assert len(mutants) >= 100

    failures = []
    for number, (label, data, must) in enumerate(mutants):
        path = build(str(tmp_path / f"m{number:03d}"), data)
        result, error, _ = call(label, lambda: read_retinaface(path))
        if error is not None:
            check_message(label, str(error), [path])
            if must is not None:
                failures.append(f"{label}: raised {error}")
            continue
        records, report = result
        report_failures(label, report, ["label.txt:"])
        failures += [f"{label}: {b}" for b in box_failures(records, SIZES) + landmark_failures(records)]
        if must == "line" and (report.problems != 1 or report.faces != base.faces - 1):
            failures.append(f"{label}: {report.problems} problems, {report.faces} faces "
                            f"(expected the bad line counted and left out)")
    assert not failures, f"{len(failures)} of {len(mutants)} mutants:\n" + "\n".join(failures[:20])


def _finite_float(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def test_retinaface_paths_outside_the_dataset_are_refused_never_read(tmp_path, image_dir, outside_reads):
    """A `# relpath` leading out (absolute, '..', a symlink inside pointing out) is
    reported with its line and its image never opened."""
    from data.formats.retinaface import read_retinaface

    outside, seen = outside_reads
    failures = []
    for k, name in enumerate(_hostile_names(random.Random(SEED + 23), outside)):
        root = tmp_path / f"rf{k}"
        place_images(image_dir, str(root / "images"))
        (root / "label.txt").write_text(f"# a.jpg\n4 5 20 16\n# {name}\n1 1 5 5\n")
        result, error, _ = call(f"retinaface {name}", lambda: read_retinaface(str(root / "label.txt")))
        if error is not None or result.report.problems != 1 or len(result.records) != 1:
            failures.append(f"retinaface {name}: {error or result.report.summary()}")
        else:
            check_message(name, result.report.messages[0], ["label.txt:3: "])
    root = tmp_path / "rf_link"
    place_images(image_dir, str(root / "images"))
    os.symlink(outside / "outside.jpg", root / "images" / "link.jpg")
    (root / "label.txt").write_text("# link.jpg\n1 1 5 5\n# a.jpg\n")
    records, report = read_retinaface(str(root / "label.txt"))
    assert [r.name for r in records] == ["a.jpg"] and report.problems == 1
    assert not failures, "\n".join(failures)
    assert not seen, f"files outside the dataset were touched: {seen[:5]}"
