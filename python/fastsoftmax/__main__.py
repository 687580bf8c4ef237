"""``python -m fastsoftmax``: version, active path, the worked example, a quick comparison."""

from __future__ import annotations

import time

import numpy as np

import fastsoftmax as fs


def _median_seconds(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main() -> None:
    print(f"fastsoftmax {fs.__version__}, backend: {fs.backend()}")
    example = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0]
    with np.printoptions(precision=8):
        print(f"softmax({example}) =\n  {fs.softmax(example)}")
    rows, cols = 4096, 4096
    x = np.random.default_rng(0).normal(0.0, 3.0, (rows, cols)).astype(np.float32)
    out = np.empty_like(x)
    t_fs = _median_seconds(lambda: fs.softmax(x, out=out))
    t_np = _median_seconds(lambda: _numpy_softmax(x))
    n = x.size
    print(f"softmax of a ({rows}, {cols}) float32 array, median of 7:")
    print(f"  fastsoftmax {t_fs * 1e9 / n:6.2f} ns/element")
    print(f"  NumPy       {t_np * 1e9 / n:6.2f} ns/element  ({t_np / t_fs:.1f}x slower)")


if __name__ == "__main__":
    main()
