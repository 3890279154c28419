"""Train on the GPU with CuPy (XPNN_BACKEND=cupy) and compare with NumPy on the CPU.

XPNN_BACKEND=cupy python examples/gpu.py           # needs `pip install -e ".[cuda12]"` and a CUDA device
python examples/gpu.py --smoke                     # on a machine without CuPy/GPU: says so, runs on NumPy

The same seed gives the same run on either backend (random draws happen on the host); float64 runs agree
to ~1e-10, float32 runs to ~1e-4 (different summation orders on the device).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import xpnn
from xpnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential


def cupy_problem() -> str | None:
    """Why CuPy cannot run here, or None when it can."""
    try:
        import cupy
    except ImportError:
        return 'CuPy is not installed (pip install -e ".[cuda12]" or ".[cuda13]")'
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device is visible"
    except Exception as exc:  # the CUDA runtime raises its own error types when there is no driver
        return f"no usable CUDA device ({exc})"
    return None


def train(backend: str, dtype: str, n_train: int, epochs: int) -> tuple[float, float]:
    xpnn.set_backend(backend)  # before building the model
    (x, y), _ = xpnn.datasets.load_embedded(n_train=n_train, n_test=6)
    model = Sequential(
        [Conv2D(8, 4, padding="same"), ReLU(), MaxPool2D(8, strides=8, padding="same"), Flatten(), Dense(6)],
        dtype=dtype,
    ).build((64, 64, 3), seed=1)
    start = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=64, optimizer=Adam(0.009), seed=1, verbose=0)
    return history.history["loss"][-1], time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 64 images; NumPy if no GPU")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    args = parser.parse_args(argv)
    n_train, epochs = (64, 1) if args.smoke else (600, 5)

    asked = os.environ.get("XPNN_BACKEND", "cupy").strip().lower() or "cupy"
    problem = cupy_problem() if asked == "cupy" else f"XPNN_BACKEND={asked}"
    if problem is not None:
        if not args.smoke:
            sys.exit(f"error: cannot train on the GPU: {problem}. Use --smoke to run the CPU part only.")
        print(f"GPU skipped: {problem}; training on NumPy only (smoke mode).")
        loss, seconds = train("numpy", args.dtype, n_train, epochs)
        print(f"numpy  {args.dtype}: final loss {loss:.12f}  ({seconds:.2f} s)")
        return

    gpu_loss, gpu_s = train("cupy", args.dtype, n_train, epochs)
    cpu_loss, cpu_s = train("numpy", args.dtype, n_train, epochs)
    print(f"cupy   {args.dtype}: final loss {gpu_loss:.12f}  ({gpu_s:.2f} s, first call includes kernel compiles)")
    print(f"numpy  {args.dtype}: final loss {cpu_loss:.12f}  ({cpu_s:.2f} s)")
    print(f"relative difference {abs(gpu_loss - cpu_loss) / abs(cpu_loss):.2e}")


if __name__ == "__main__":
    main()
