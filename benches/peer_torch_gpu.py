"""Train the benchmark model with PyTorch (eager mode) on a GPU, the same way
densetrain does.

Model: 784-256-128-10 with ReLU, He uniform init (Glorot uniform for the
output layer) and zero biases, softmax cross-entropy, and Adam with Keras's
defaults (lr 1e-3, beta1 0.9, beta2 0.999, epsilon 1e-7). Rows are shuffled
every epoch, and the last 10% of the training file is held out (the Keras
tail split).
The whole training set lives on the GPU and batches are gathered there by
index, as densetrain does. `--precision bf16` runs the matrix products under
`torch.autocast` with f32 master weights. TF32 stays off for f32.

PyTorch's Adam adds epsilon to the square root of the bias-corrected second
moment, densetrain's default to the uncorrected one; with epsilon 1e-7 the
difference is below the noise of these runs.

Prints one line per epoch and a final `RESULT` line that gpu-check.sh reads.
"""

import argparse
import time

import numpy as np
from peer_common import load


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    device = torch.device("cuda")

    x, y = load(args.data, "train", np.int64)
    x_test, y_test = load(args.data, "t10k", np.int64)
    n_train = int(len(x) * 0.9)
    xd = torch.from_numpy(x[:n_train]).to(device)
    yd = torch.from_numpy(y[:n_train]).to(device)
    x_val = torch.from_numpy(x[n_train:]).to(device)
    y_val = torch.from_numpy(y[n_train:]).to(device)

    sizes = [784, 256, 128, 10]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(fan_in, fan_out)
        last = i == len(sizes) - 2
        limit = np.sqrt(6.0 / (fan_in + fan_out)) if last else np.sqrt(6.0 / fan_in)
        torch.nn.init.uniform_(linear.weight, -limit, limit)
        torch.nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    autocast = args.precision == "bf16"

    def accuracy(xs, ys):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            return (model(xs).argmax(dim=1) == ys).float().mean().item()

    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)
    epoch_seconds = []
    for epoch in range(1, args.epochs + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(n_train, device=device, generator=generator)
        loss_sum = torch.zeros((), device=device)
        for s in range(0, n_train, args.batch_size):
            idx = order[s : s + args.batch_size]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(xd[idx]), yd[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        epoch_seconds.append(seconds)
        val_acc = accuracy(x_val, y_val)
        print(
            f"epoch {epoch} {seconds:.3f}s loss {loss_sum.item() / n_train:.4f} "
            f"val_accuracy {val_acc:.4f}"
        )
    test_acc = accuracy(torch.from_numpy(x_test).to(device), torch.from_numpy(y_test).to(device))
    seconds = sorted(epoch_seconds)
    median = seconds[len(seconds) // 2]
    print(
        f"RESULT torch median_epoch_s {median:.3f} min {seconds[0]:.3f} max {seconds[-1]:.3f} "
        f"samples_per_s {n_train / median:.0f} test_accuracy {test_acc:.4f}"
    )


if __name__ == "__main__":
    main()
