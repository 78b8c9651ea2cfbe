"""Train the benchmark model with PyTorch on the CPU, same data and split as densetrain.

Model 784-256-128-10 (hidden widths set by --layers) with ReLU (He uniform
init, zero biases; Glorot uniform for the output layer), softmax
cross-entropy, Adam with Keras's defaults (lr 1e-3, beta1 0.9, beta2 0.999,
epsilon 1e-7). PyTorch adds epsilon to the bias-corrected sqrt(v) and Keras
before the correction, a difference far below run-to-run noise here. Batch
128, rows shuffled every epoch, last 10% of the training file held out (the
Keras tail split). The step is PyTorch's usual eager
forward, backward and `optimizer.step()`, with the fused multi-tensor Adam
(`foreach=True`) and the thread count set to the cores the process may use.

Prints one line per epoch and a final `RESULT` line that epoch_bench.sh reads.
"""

import os
import time

import numpy as np
from peer_common import cpu_peer_args, load, print_result


def main():
    args = cpu_peer_args()

    import torch

    # Use exactly the cores taskset granted, like the other trainers.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(args.seed)

    x, y = load(args.data, "train", np.int64)
    x_test, y_test = load(args.data, "t10k", np.int64)
    n_train = int(len(x) * 0.9)
    x_train = torch.from_numpy(x[:n_train])
    y_train = torch.from_numpy(y[:n_train])
    x_val, y_val = torch.from_numpy(x[n_train:]), torch.from_numpy(y[n_train:])

    sizes = [784] + [int(units) for units in args.layers.split(",")] + [10]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(fan_in, fan_out)
        last = i == len(sizes) - 2
        limit = np.sqrt(6.0 / (fan_in + fan_out)) if last else np.sqrt(6.0 / fan_in)
        with torch.no_grad():
            linear.weight.uniform_(-limit, limit)
            linear.bias.zero_()
        layers.append(linear)
        if not last:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7, foreach=True
    )
    loss_fn = torch.nn.CrossEntropyLoss()

    def accuracy(xs, ys):
        with torch.no_grad():
            return (model(xs).argmax(dim=1) == ys).float().mean().item()

    generator = torch.Generator().manual_seed(args.seed)
    epoch_seconds = []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n_train, generator=generator)
        start = time.perf_counter()
        loss = None
        for s in range(0, n_train, args.batch_size):
            idx = order[s : s + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        epoch_seconds.append(seconds)
        val_acc = accuracy(x_val, y_val)
        print(f"epoch {epoch} {seconds:.3f}s loss {loss.item():.4f} val_accuracy {val_acc:.4f}")
    test_acc = accuracy(torch.from_numpy(x_test), torch.from_numpy(y_test))
    print_result("torch", epoch_seconds, n_train, test_acc)


if __name__ == "__main__":
    main()
