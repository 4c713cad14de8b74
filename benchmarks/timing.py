"""What the step benchmarks share: a timer and this machine's floors for one training step."""
import time

import torch

# Bytes a step moves, in parameter-sized float32 arrays: the updates (Adam(W) reading weights,
# gradients and both moments and writing three of them; the EMA reading two copies and writing
# one), and before them the weights read forward and backward and the gradient written.
UPDATE_ARRAYS = 7 + 3
ARRAYS_MOVED = 2 + 1 + UPDATE_ARRAYS


def timed_ms(fn, device, n):
    """Milliseconds per call of fn, after a warm-up."""
    for _ in range(max(3, n // 10)):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def floors(n_params, batch, device, matmul=(512, 512), calls=2000):
    """(memory floor ms, compute floor ms, GB/s, GFLOP/s) of one step on this machine: the bytes
    a step must move over the copy bandwidth measured here, and 6 FLOP per parameter per vector
    (forward + backward) over the rate of a [batch, k] @ [k, n] matmul, (k, n) = `matmul`, the
    step's own widest shape."""
    x = torch.empty(2 ** 26, device=device)  # 256 MB: beyond any cache
    y = torch.empty_like(x)
    gbps = 2 * x.numel() * 4 / timed_ms(lambda: y.copy_(x), device, 10) / 1e6
    k, n = matmul
    a, w = torch.randn(batch, k, device=device), torch.randn(k, n, device=device)
    out = torch.empty(batch, n, device=device)
    gflops = 2 * batch * k * n / timed_ms(lambda: torch.mm(a, w, out=out), device, calls) / 1e6
    bytes_moved = 4 * n_params * ARRAYS_MOVED
    return bytes_moved / gbps / 1e6, 6 * n_params * batch / gflops / 1e6, gbps, gflops
