"""Train the benchmark model with JAX on the same data and split as densetrain.

Model 784-256-128-10 (hidden widths set by --layers) with ReLU (He uniform
init, zero biases), softmax cross-entropy, Adam with Keras's defaults (lr 1e-3, beta1 0.9, beta2 0.999,
epsilon 1e-7 added to sqrt(v) with the bias correction folded into the step),
batch 128, rows shuffled every epoch, last 10% of the training file held out
(the Keras tail split). One jitted function per training step.

Prints one line per epoch and a final `RESULT` line that epoch_bench.sh reads.
"""

import time

import numpy as np
from peer_common import cpu_peer_args, load, print_result


def main():
    args = cpu_peer_args()

    import jax
    import jax.numpy as jnp

    x, y = load(args.data, "train")
    x_test, y_test = load(args.data, "t10k")
    n_train = int(len(x) * 0.9)
    x_train, y_train = x[:n_train], y[:n_train]
    x_val, y_val = x[n_train:], y[n_train:]

    sizes = [784] + [int(units) for units in args.layers.split(",")] + [10]
    key = jax.random.PRNGKey(args.seed)
    params = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        last = i == len(sizes) - 2
        limit = np.sqrt(6.0 / (fan_in + fan_out)) if last else np.sqrt(6.0 / fan_in)
        w = jax.random.uniform(sub, (fan_in, fan_out), jnp.float32, -limit, limit)
        params.append((w, jnp.zeros(fan_out, jnp.float32)))

    def logits_of(params, xb):
        h = xb
        for w, b in params[:-1]:
            h = jax.nn.relu(h @ w + b)
        w, b = params[-1]
        return h @ w + b

    def loss_fn(params, xb, yb):
        logp = jax.nn.log_softmax(logits_of(params, xb))
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-7
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)

    @jax.jit
    def step(params, m, v, t, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        alpha = lr * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - alpha * m / (jnp.sqrt(v) + eps), params, m, v
        )
        return params, m, v, loss

    @jax.jit
    def accuracy(params, xb, yb):
        return jnp.mean(jnp.argmax(logits_of(params, xb), axis=1) == yb)

    rng = np.random.default_rng(args.seed)
    xd, yd = jnp.asarray(x_train), jnp.asarray(y_train)
    t = 0
    epoch_seconds = []
    for epoch in range(1, args.epochs + 1):
        order = jnp.asarray(rng.permutation(n_train))
        start = time.perf_counter()
        loss = None
        for s in range(0, n_train, args.batch_size):
            idx = order[s : s + args.batch_size]
            t += 1
            params, m, v, loss = step(params, m, v, float(t), xd[idx], yd[idx])
        loss.block_until_ready()
        seconds = time.perf_counter() - start
        epoch_seconds.append(seconds)
        val_acc = float(accuracy(params, jnp.asarray(x_val), jnp.asarray(y_val)))
        print(f"epoch {epoch} {seconds:.3f}s loss {float(loss):.4f} val_accuracy {val_acc:.4f}")
    test_acc = float(accuracy(params, jnp.asarray(x_test), jnp.asarray(y_test)))
    print_result("jax", epoch_seconds, n_train, test_acc)


if __name__ == "__main__":
    main()
