"""A fingerprint of the grid encoding: `encode_grid` on 3,000 seeded random cases, hashed.

    python benchmarks/grid_fingerprint.py                 # prints the SHA-256 of every target
    python benchmarks/grid_fingerprint.py --out grids.npz # also keeps the arrays to compare

Run it in two checkouts (before and after a refactor): the same hash means the same targets,
bit for bit, for every assignment rule (centre, neighbour cells, centre sampling), with and
without landmarks (some points missing), ignored faces, faces over the edges and collisions.
"""

import argparse
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.grid import encode_grid  # noqa: E402


def cases(count: int, seed: int = 7):
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--out", help="also write every grid and collision count here (.npz)")
    args = parser.parse_args(argv)
    digest, arrays = hashlib.sha256(), {}
    for i, (boxes, ignore, size, grid, kwargs) in enumerate(cases(args.cases)):
        targets = encode_grid(boxes, ignore, size, grid, **kwargs)
        digest.update(targets.grid.tobytes())
        digest.update(np.int64(targets.collisions).tobytes())
        arrays[f"grid{i}"], arrays[f"collisions{i}"] = targets.grid, np.int64(targets.collisions)
    if args.out:
        np.savez(args.out, **arrays)
    print(f"{args.cases} cases, sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    main()
