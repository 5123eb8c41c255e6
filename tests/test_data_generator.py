"""The batch generator: shapes and ranges, targets, seeded shuffling, determinism across
calls and workers, skipping corrupt images, debug pictures."""

import os
import pickle
import warnings

import cv2
import numpy as np
import pytest
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from config import Config
from data.augment import AugmentSpec, load_training_sample
from data.data_generator import FaceGridDataset
from data.grid import CLASS, encode_grid
from data.image import PAD_VALUE, to_network_input
from data.records import ImageRecord
from common.errors import DatasetError


def specs(config):
    """The grid and augmentation specs a sample loader takes, from one test Config."""
    return config.grid_spec(), AugmentSpec.from_config(config)


CONFIG = Config(input_size=64, grid_size=4, batch_size=4, seed=5)


def write_jpeg(path, image):
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return str(path)


@pytest.fixture
def face_records(tmp_path):
    """Ten 160x120 JPEGs, each with two coloured faces at known boxes."""
    records = []
    for i in range(10):
        image = np.full((120, 160, 3), 90, np.uint8)
        boxes = np.array([[10 + 3 * i, 20, 50 + 3 * i, 70], [100, 30 + 2 * i, 136, 70 + 2 * i]],
                         np.float32)  # x1, y1, x2, y2
        for x1, y1, x2, y2 in boxes.astype(int):
            image[y1:y2, x1:x2] = (0, 40 * (i % 6), 255)
        path = write_jpeg(tmp_path / f"img{i}.jpg", image)
        records.append(ImageRecord(path, f"img{i}.jpg", boxes, np.zeros(2, bool)))
    return records


@pytest.fixture
def level_records(tmp_path):
    """Twelve face-free JPEGs, image i filled with grey level 10 * (i + 1): a batch tells
    which records it holds, and in which order."""
    records = []
    for i in range(12):
        path = write_jpeg(tmp_path / f"level{i}.jpg", np.full((48, 64, 3), 10 * (i + 1), np.uint8))
        records.append(ImageRecord(path, f"level{i}.jpg"))
    return records


def levels(batch_images):
    """Record index of each image of a batch of `level_records` (augmentation off)."""
    # Sample the picture's centre: the letterbox pads the top and bottom rows.
    return [int(round(v / 10)) - 1 for v in batch_images[:, 32, 32].mean(axis=1)]


def all_batches(dataset):
    return [dataset[i] for i in range(len(dataset))]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_batch_shapes_dtypes_and_range(face_records):
    """Batches are uint8 RGB images (B,S,S,3), which the network scales to [-1, 1] itself,
    and float32 targets (B,G,G,5)."""
    dataset = FaceGridDataset(face_records, CONFIG, training=True)
    images, targets = dataset[0]
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    assert images.flags["C_CONTIGUOUS"]
    assert targets.shape == (4, 4, 4, 5) and targets.dtype == np.float32
    assert images.min() < 64 and images.max() > 192  # real pixels, not a constant


def test_length_drops_last_partial_batch_only_when_shuffling(face_records):
    """10 records, batch 4: training (shuffled) has 2 full batches, validation 3 batches
    with a last batch of 2."""
    assert len(FaceGridDataset(face_records, CONFIG, training=True)) == 2
    assert len(FaceGridDataset(face_records, CONFIG, training=True, shuffle=False)) == 3
    validation = FaceGridDataset(face_records, CONFIG, training=False)
    assert len(validation) == 3
    assert validation[2][0].shape[0] == 2
    with pytest.raises(IndexError):
        validation[3]


def test_every_face_is_a_target(face_records):
    """Validation targets are exactly encode_grid of the sample's faces (2 per image), and
    load_batch returns those faces with the same images and targets."""
    dataset = FaceGridDataset(face_records, CONFIG, training=False)
    images, targets = dataset[0]
    same_images, same_targets, faces = dataset.load_batch(0)
    np.testing.assert_array_equal(images, same_images)
    np.testing.assert_array_equal(targets, same_targets)
    assert len(faces) == 4
    for j in range(4):
        image, boxes, ignore = load_training_sample(face_records[j], *specs(CONFIG), None, False)
        np.testing.assert_array_equal(targets[j], encode_grid(boxes, ignore, 64, 4).grid)
        np.testing.assert_array_equal(images[j], to_network_input(image))
        np.testing.assert_array_equal(faces[j][0], boxes)
        np.testing.assert_array_equal(faces[j][1], ignore)
        assert (targets[j][..., CLASS] == 1).sum() == 2


def test_validation_batches_are_deterministic(face_records):
    """Validation gives the same batches on every call, across instances and epochs."""
    a = FaceGridDataset(face_records, CONFIG, training=False)
    first = all_batches(a)
    assert_batches_equal(first, all_batches(a))
    a.on_epoch_end()
    assert_batches_equal(first, all_batches(a))
    assert_batches_equal(first, all_batches(FaceGridDataset(face_records, CONFIG, training=False)))


def test_shuffling_is_seeded_and_changes_per_epoch(level_records):
    """The epoch order depends only on (seed, epoch): same seed same order, a new order
    each epoch, another seed another order; each epoch visits distinct records."""
    config = CONFIG.replace(augment=False)

    def epoch_orders(seed, epochs=3):
        dataset = FaceGridDataset(level_records, config.replace(seed=seed), training=True)
        orders = []
        for _ in range(epochs):
            orders.append([k for i in range(len(dataset)) for k in levels(dataset[i][0])])
            dataset.on_epoch_end()
        return orders

    orders = epoch_orders(5)
    assert orders == epoch_orders(5)
    assert orders[0] != orders[1] != orders[2]
    assert orders != epoch_orders(6)
    for order in orders:
        assert len(order) == 12 and sorted(order) == list(range(12))  # a permutation
    unshuffled = FaceGridDataset(level_records, config, training=False)
    assert [k for i in range(3) for k in levels(unshuffled[i][0])] == list(range(12))


def test_training_batches_do_not_depend_on_call_order(face_records):
    """A training batch's augmentation is seeded per (seed, epoch, record), so batches
    asked for in any order (as workers do) are identical; set_epoch reproduces an epoch."""
    a = FaceGridDataset(face_records, CONFIG, training=True)
    b = FaceGridDataset(face_records, CONFIG, training=True)
    forward = all_batches(a)
    backward = [b[i] for i in reversed(range(len(b)))][::-1]
    assert_batches_equal(forward, backward)
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], forward[0][0])  # next epoch: other samples
    a.set_epoch(0)
    assert_batches_equal(forward, all_batches(a))


def iterate_like_fit(dataset):
    """The batches of one epoch as Model.fit receives them (Keras' PyDataset adapter)."""
    adapter = PyDatasetAdapter(dataset, shuffle=False)
    adapter.on_epoch_begin()
    batches = list(adapter.get_numpy_iterator())
    adapter.on_epoch_end()
    return batches


def test_two_worker_threads_give_the_same_batches_as_one(face_records):
    """PyDataset with workers=2 (threads) yields exactly the batches of workers=1."""
    one = iterate_like_fit(FaceGridDataset(face_records, CONFIG, training=True, workers=1))
    two = iterate_like_fit(FaceGridDataset(face_records, CONFIG, training=True, workers=2))
    assert len(one) == 2
    assert_batches_equal(one, two)


def test_worker_processes_give_the_same_batches_as_one(face_records):
    """use_multiprocessing=True with 2 worker processes yields the batches of workers=1."""
    one = iterate_like_fit(FaceGridDataset(face_records, CONFIG, training=True, workers=1))
    two = iterate_like_fit(
        FaceGridDataset(face_records, CONFIG, training=True, workers=2, use_multiprocessing=True)
    )
    assert_batches_equal(one, two)


def test_dataset_pickles_for_multiprocessing(face_records):
    """The dataset survives pickling (worker processes) and gives the same batches."""
    dataset = FaceGridDataset(face_records, CONFIG, training=True, use_multiprocessing=True)
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.use_multiprocessing and clone.workers == CONFIG.workers
    assert_batches_equal(all_batches(dataset), all_batches(clone))


def test_corrupt_jpeg_is_skipped_with_one_warning(face_records, tmp_path):
    """A corrupt JPEG never stops an epoch: it is reported once, by name; training uses
    another image instead, validation a blank all-background one."""
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not image data" * 20)
    records = [ImageRecord(str(bad), "corrupt.jpg", [[1, 1, 6, 6]], [False])] + face_records[:3]

    training = FaceGridDataset(records, CONFIG, training=True, shuffle=False)
    with pytest.warns(UserWarning, match="corrupt.jpg") as caught:
        images, targets = training[0]
    assert len([w for w in caught if "corrupt.jpg" in str(w.message)]) == 1
    assert str(bad) in training.unreadable
    assert (targets[0][..., CLASS] == 1).sum() >= 1  # a real replacement image with faces
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second pass must not warn again
        training[0]

    validation = FaceGridDataset(records, CONFIG, training=False)
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        images, targets = validation[0]
    np.testing.assert_allclose(images[0], to_network_input(np.full((64, 64, 3), PAD_VALUE, np.uint8)))
    assert not targets[0].any()


def test_collisions_are_counted(tmp_path):
    """Two faces whose centres share a cell: the smaller is counted as a collision."""
    image = np.full((128, 128, 3), 90, np.uint8)
    path = write_jpeg(tmp_path / "pair.jpg", image)
    boxes = np.array([[2, 2, 22, 22], [4, 4, 14, 14], [70, 70, 100, 100]], np.float32)
    record = ImageRecord(path, "pair.jpg", boxes, np.zeros(3, bool))
    dataset = FaceGridDataset([record], CONFIG, training=False)
    dataset[0]
    assert dataset.collisions == 1 and dataset.encoded_faces == 3
    dataset[0]
    assert dataset.collisions == 2 and dataset.encoded_faces == 6


def test_debug_dir_gets_pictures_with_boxes(face_records, tmp_path):
    """debug_dir receives the first images of the first batches with their boxes drawn."""
    debug = tmp_path / "debug"
    dataset = FaceGridDataset(face_records, CONFIG, training=False, debug_dir=str(debug))
    dataset[0]
    dataset[2]  # beyond the first batches: nothing written
    names = sorted(os.listdir(debug))
    assert names == [f"epoch000_batch000_{j:02d}.png" for j in range(4)]
    picture = cv2.imread(str(debug / names[0]))
    assert picture.shape == (64, 64, 3)
    green = (picture[..., 1] > 180) & (picture[..., 0] < 100) & (picture[..., 2] < 100)
    assert green.sum() > 20  # face boxes drawn in green


def test_empty_record_list_is_rejected():
    """No records is a DatasetError, not an empty epoch discovered later."""
    with pytest.raises(DatasetError, match="no image records"):
        FaceGridDataset([], CONFIG, training=True)


def test_endless_dataset_gives_fit_every_step_of_every_epoch(face_records):
    """steps_per_epoch longer than a pass: an endless dataset serves all of them, where a
    finite one makes Keras stop the epoch early ("ran out of data")."""
    import keras

    config = CONFIG.replace(batch_size=2)
    inputs = keras.Input((64, 64, 3), dtype="uint8")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(4 * 4 * 5)(x)
    model = keras.Model(inputs, keras.layers.Reshape((4, 4, 5))(x))
    model.compile("sgd", "mse")
    steps = []
    counter = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: steps.append(0),
        on_train_batch_end=lambda b, logs: steps.__setitem__(-1, steps[-1] + 1))

    for workers in (1, 2):
        dataset = FaceGridDataset(face_records, config, training=True, endless=True,
                                  workers=workers)
        assert dataset.num_batches is None and len(dataset) == 5
        np.testing.assert_array_equal(dataset[7][0], dataset[2][0])  # wraps around
        steps.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "Your input ran out of data" would raise
            model.fit(dataset, epochs=2, steps_per_epoch=12, verbose=0, shuffle=False,
                      callbacks=[counter])
        assert steps == [12, 12]
        assert dataset.epoch >= 2  # reshuffled after each epoch (Keras may add one more)

    finite = FaceGridDataset(face_records, config, training=True)
    assert finite.num_batches == 5
    with pytest.raises(IndexError):
        finite[5]
