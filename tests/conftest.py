"""Shared test set-up: quiet TensorFlow, small thread pools, paths to ../shared."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
SUBSET200 = os.path.join(SHARED, "wider_val_subset200")
VAL_ANNOTATIONS = os.path.join(SHARED, "wider_val_annotations")


@pytest.fixture
def shared_subset():
    """The 200 real WIDER FACE validation photos (evaluation only, never training)."""
    if not os.path.isdir(SUBSET200):
        pytest.skip(f"{SUBSET200} not present")
    return SUBSET200


@pytest.fixture
def shared_val_annotations():
    """The full official WIDER FACE validation annotations (no images)."""
    if not os.path.isdir(VAL_ANNOTATIONS):
        pytest.skip(f"{VAL_ANNOTATIONS} not present")
    return VAL_ANNOTATIONS


def make_demo_root(tmp_path_factory, num_train: int, num_val: int, seed: int = 5) -> str:
    """A small demo dataset (data.synthetic) in a new temporary folder: its root."""
    from data.synthetic import make_demo_dataset

    root = str(tmp_path_factory.mktemp("demo"))
    make_demo_dataset(root, num_train=num_train, num_val=num_val, seed=seed, progress=False)
    return root
