"""Time densetrain and its CPU peers in alternation and print per-round ratios.

On a shared machine the load can change within minutes, so a trainer timed
for ten epochs and then its peer for ten more may see different machines.
Here each round runs every trainer for a few epochs, one after the other,
in an order that rotates from round to round, and compares their epoch
times within the round. The median and range of those per-round ratios are
the figures to quote.

Each process's first epoch is left out (JAX compiles its step there and
PyTorch warms up), so --epochs must be at least 2; a trainer's time in a
round is the median of its remaining epochs.

Run through benches/interleaved_compare.sh, which builds densetrain and
checks the environment first.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

TASKS = {
    # hidden widths, batch size
    "small": ("256,128", 128),
    "wide": ("2048,2048", 512),
}


def epoch_times(text, pattern):
    return [float(s) for s in re.findall(pattern, text, re.M)]


def run(command, cores):
    result = subprocess.run(
        ["taskset", "-c", cores] + command, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(
            f"error: {' '.join(command)} failed with exit code {result.returncode}:\n"
            f"{result.stderr[-2000:]}"
        )
    return result.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="the densetrain release binary")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--task", choices=sorted(TASKS), default="small")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--torch", action="store_true", help="include PyTorch")
    args = parser.parse_args()
    if args.epochs < 2:
        sys.exit("error: --epochs must be at least 2, because each first epoch is left out")
    if args.rounds < 1:
        sys.exit("error: --rounds must be at least 1")

    layers, batch = TASKS[args.task]
    cores = f"0-{args.threads - 1}"
    benches = os.path.dirname(os.path.abspath(__file__))
    peer_options = ["--layers", layers, "--batch-size", str(batch), "--epochs", str(args.epochs)]
    trainers = {
        "JAX": [sys.executable, os.path.join(benches, "peer_jax.py")] + peer_options,
    }
    if args.torch:
        trainers["PyTorch"] = [sys.executable, os.path.join(benches, "peer_torch.py")] + peer_options
    names = ["densetrain"] + list(trainers)

    times = {name: [] for name in names}
    ratios = {name: [] for name in names[1:]}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            order = names[shift:] + names[:shift]
            this_round = {}
            for name in order:
                if name == "densetrain":
                    text = run(
                        [args.bin, "train", "--data", "fashion-mnist", "--layers", layers,
                         "--batch-size", str(batch), "--epochs", str(args.epochs),
                         "--validation-split", "0.1", "--optimizer", "adam", "--seed", "1",
                         "--threads", str(args.threads), "--verbose", "2",
                         "--out", os.path.join(scratch, f"run-{round_index}")],
                        cores,
                    )
                    secs = epoch_times(text, r"^Epoch \d+/\d+ - \d+ batches - ([0-9.]+)s")
                else:
                    text = run(trainers[name], cores)
                    secs = epoch_times(text, r"^epoch \d+ ([0-9.]+)s")
                if len(secs) != args.epochs:
                    sys.exit(f"error: expected {args.epochs} epoch times from {name}, "
                             f"found {len(secs)} in:\n{text[-2000:]}")
                this_round[name] = statistics.median(secs[1:])
            for name in names:
                times[name].append(this_round[name])
            for name in names[1:]:
                ratios[name].append(this_round["densetrain"] / this_round[name])
            print(f"round {round_index + 1}: " + ", ".join(
                f"{name} {this_round[name]:.3f}s" for name in names), flush=True)

    print()
    print(f"{args.task} task, {args.threads} thread(s), {args.rounds} round(s) of "
          f"{args.epochs} epochs per trainer (first epoch of each left out)")
    print()
    print("| trainer | median s/epoch over rounds (min-max) |")
    print("|---|---|")
    for name in names:
        t = times[name]
        print(f"| {name} | {statistics.median(t):.3f} ({min(t):.3f}-{max(t):.3f}) |")
    print()
    for name in names[1:]:
        r = ratios[name]
        print(f"densetrain epoch time / {name} epoch time, per round: median "
              f"{statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f})")


if __name__ == "__main__":
    main()
