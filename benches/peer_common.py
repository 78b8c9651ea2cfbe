"""Code shared by the peer trainers in benches/: Fashion-MNIST loading, the
command line of the CPU peers, and the final `RESULT` line the scripts read.

The IDX files (gzipped or not) are read the way densetrain reads them:
images flattened to rows of pixels divided by 255, labels as integers.
"""

import argparse
import gzip
import os
import statistics
import struct

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(directory, prefix, kind):
    rank = 3 if kind == "images" else 1
    for suffix in ("-ubyte.gz", "-ubyte"):
        path = os.path.join(directory, f"{prefix}-{kind}-idx{rank}{suffix}")
        if os.path.exists(path):
            return path
    raise SystemExit(f"error: no {prefix} {kind} IDX file in {directory}")


def load(directory, prefix, label_dtype=np.int32):
    """Returns (x, y) of the `train` or `t10k` files in `directory`."""
    images = read_idx(find(directory, prefix, "images"))
    labels = read_idx(find(directory, prefix, "labels"))
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x, labels.astype(label_dtype)


def cpu_peer_args():
    """Parses the options every CPU peer takes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--layers", default="256,128", help="hidden layer widths, comma-separated"
    )
    return parser.parse_args()


def print_result(name, epoch_seconds, train_rows, test_accuracy):
    """Prints the `RESULT` line: median, min and max epoch time, samples/s, test accuracy.

    The median is `statistics.median`, as epoch_bench.sh takes densetrain's,
    so an even number of epochs averages the middle two for every trainer.
    """
    median = statistics.median(epoch_seconds)
    print(
        f"RESULT {name} median_epoch_s {median:.3f} "
        f"min {min(epoch_seconds):.3f} max {max(epoch_seconds):.3f} "
        f"samples_per_s {train_rows / median:.0f} test_accuracy {test_accuracy:.4f}"
    )
