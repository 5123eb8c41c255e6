"""Fingerprints of components: seeded random inputs through one part, its outputs hashed.

    python benchmarks/fingerprint.py grid        # encode_grid on 3,000 cases
    python benchmarks/fingerprint.py augment     # plan_augmentation + augment_image on 400
    python benchmarks/fingerprint.py network     # build_network's model JSON, 3 architectures
    python benchmarks/fingerprint.py demo        # synthesize_image: 200 demo scenes
    python benchmarks/fingerprint.py grid --out grids.npz   # also keep the arrays to compare

Run it in two checkouts (before and after a refactor): the same hash means the same
outputs, bit for bit. grid: every assignment rule (centre, neighbour cells, centre
sampling), with and without landmarks (some points missing), ignored faces, faces over the
edges and collisions. augment: crops, zoom-outs, flips, jitter, letterbox and stretch,
reduced-size decoding, points. network: every layer, its name and configuration (no weights
are loaded: backbone_weights='none'). demo: the drawn scenes of the demo dataset, their
boxes and attributes.
"""

import argparse
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.grid import GridSpec, encode_grid  # noqa: E402


def grid_cases(count: int, seed: int = 7):
    """(boxes, ignore, image_size, grid_size, keyword arguments) of `count` random cases."""
    rng = np.random.default_rng(seed)
    for case in range(count):
        n = int(rng.integers(0, 40))
        size = int(rng.choice([64, 224, 320]))
        grid = int(rng.choice([4, 7, 14, 40]))
        xy = rng.uniform(-20, size, (n, 2))
        wh = rng.exponential(size / 8, (n, 2)) + 1
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        ignore = rng.random(n) < 0.2
        points = None
        if case % 2:
            points = rng.uniform(0, size, (n, 6, 2)).astype(np.float32)
            points[rng.random((n, 6)) < 0.1] = np.nan
        rule = case % 3
        yield boxes, ignore, size, grid, dict(neighbours=rule == 1,
                                              centre_radius=1.5 if rule == 2 else 0.0,
                                              points=points)


def grid_outputs(count: int):
    """Every case's grid target, then its collision count."""
    for boxes, ignore, size, grid, kwargs in grid_cases(count):
        targets = encode_grid(boxes, ignore, size, grid, **kwargs)
        yield targets.grid
        yield np.int64(targets.collisions)


def augment_outputs(count: int, seed: int = 3):
    """Every case's augmented input, boxes, ignore flags (and points, every other case),
    with the `small` preset's strengths (zoom-outs to 2x, face-centred crops)."""
    from config import Config, small_config
    from data.augment import AugmentSpec, augment_image, plan_augmentation

    spec = AugmentSpec.from_config(small_config(Config()).replace(min_face_size=3.0))
    rng = np.random.default_rng(seed)
    for case in range(count):
        h, w = int(rng.integers(40, 300)), int(rng.integers(40, 300))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        n = int(rng.integers(0, 12))
        xy = rng.uniform(0, [w, h], (n, 2))
        boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(2, 60, (n, 2)), [w, h])],
                               1).astype(np.float32)
        ignore = rng.random(n) < 0.2
        points = rng.uniform(0, [w, h], (n, 5, 2)).astype(np.float32) if case % 2 else None
        grid = GridSpec(int(rng.choice([64, 128])), 4, letterbox=bool(case % 3))
        plan = plan_augmentation(w, h, boxes, ignore, rng, True, spec)
        scale = float(rng.choice([1.0, 0.5]))  # as if the JPEG were decoded at half size
        decoded = image if scale == 1.0 else np.ascontiguousarray(image[::2, ::2])
        yield from augment_image(decoded, boxes, ignore, plan, grid, spec, scale=scale,
                                 points=points)


def network_outputs(count: int):
    """The model JSON of three architectures (`count` is not used)."""
    from model.network import build_network

    for grid, alpha, channels, separable in (
            (GridSpec(224, 7), 0.35, 32, False),
            (GridSpec(320, 40, 3, neighbour_cells=True, landmarks=True), 0.35, 64, True),
            (GridSpec(224, 14, centre_radius=2.5), 0.5, 48, False)):
        yield np.frombuffer(build_network(grid, alpha, channels, separable,
                                          "none").to_json().encode(), np.uint8)


def demo_outputs(count: int, seed: int = 11):
    """Every scene's image, face boxes and every other field, from one seeded generator as
    `make_demo_dataset` draws them."""
    from data.synthetic import synthesize_image

    rng = np.random.default_rng(seed)
    for _ in range(count):
        for field in synthesize_image(rng):
            yield np.asarray(field)


PARTS = {"grid": (grid_outputs, 3000), "augment": (augment_outputs, 400),
         "network": (network_outputs, 3), "demo": (demo_outputs, 200)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=sorted(PARTS), help="the component to fingerprint")
    parser.add_argument("--cases", type=int, help="how many random cases (default: the part's)")
    parser.add_argument("--out", help="also write every output array here (.npz)")
    args = parser.parse_args(argv)
    outputs, default = PARTS[args.part]
    cases = args.cases or default
    digest, arrays = hashlib.sha256(), {}
    for i, array in enumerate(outputs(cases)):
        array = np.ascontiguousarray(array)
        digest.update(array.tobytes())
        arrays[f"output{i}"] = array
    if args.out:
        np.savez(args.out, **arrays)
    print(f"{args.part}: {cases} cases, {len(arrays)} arrays, sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    main()
