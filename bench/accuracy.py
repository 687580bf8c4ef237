"""Accuracy of float32 softmax and log_softmax: fastsoftmax on each ISA against its peers.

    python bench/accuracy.py [--markdown PATH] [--json PATH]

Softmax: the largest error in ULP against the float64 softmax of the same float32 inputs,
over outputs in the normal range. log_softmax: the largest error in units of
max(ULP of the output, 1e-7 / ULP(1)) -- i.e. the issue's "2 ULP or 1e-7" criterion as a ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastsoftmax as fs  # noqa: E402
from machine import describe, one_line  # noqa: E402

CASES = {
    "normal(0, 3), (4096, 1024)": lambda rng: rng.normal(0, 3, (4096, 1024)),
    "normal(0, 3), (16, 32000)": lambda rng: rng.normal(0, 3, (16, 32000)),
    "normal(0, 30), (1024, 1000)": lambda rng: rng.normal(0, 30, (1024, 1000)),
    "uniform(-1, 1), (1, 16M)": lambda rng: rng.uniform(-1, 1, (1, 1 << 24)),
    "normal(0, 3), (65536, 10)": lambda rng: rng.normal(0, 3, (65536, 10)),
}


def reference(x: np.ndarray):
    z = x.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
    return np.exp(z - lse), z - lse


def softmax_ulp(y: np.ndarray, ref: np.ndarray) -> float:
    normal = ref > np.finfo(np.float32).tiny
    spacing = np.spacing(ref[normal].astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(y[normal].astype(np.float64) - ref[normal]) / spacing))


def log_softmax_units(y: np.ndarray, ref: np.ndarray) -> float:
    unit = np.maximum(np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64), 1e-7 / 2)
    finite = np.isfinite(ref)
    return float(np.max(np.abs(y[finite].astype(np.float64) - ref[finite]) / unit[finite]))


def peers():
    """name -> (softmax, log_softmax) on a float32 (rows, n) array, last axis."""
    out = {}
    try:
        import scipy.special as sp

        out["scipy"] = (lambda x: sp.softmax(x, axis=-1), lambda x: sp.log_softmax(x, axis=-1))
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(1)
        out["torch"] = (
            lambda x: torch.softmax(torch.from_numpy(x), -1).numpy(),
            lambda x: torch.log_softmax(torch.from_numpy(x), -1).numpy(),
        )
    except ImportError:
        pass
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        def session(op):
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
            y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
            graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], axis=-1)], "g", [x], [y])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = 8
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

        sm, lsm = session("Softmax"), session("LogSoftmax")
        out["onnxruntime"] = (lambda x: sm.run(None, {"x": x})[0], lambda x: lsm.run(None, {"x": x})[0])
    except ImportError:
        pass
    try:
        import jax

        jax.config.update("jax_platforms", "cpu")
        out["jax"] = (
            lambda x: np.asarray(jax.nn.softmax(x, axis=-1)),
            lambda x: np.asarray(jax.nn.log_softmax(x, axis=-1)),
        )
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    libs = {f"fastsoftmax {isa}": isa for isa in fs._api.available_backends() if isa != "numpy"}
    others = peers()
    columns = list(libs) + list(others)
    results = {"softmax": {}, "log_softmax": {}}
    for case, make in CASES.items():
        x = make(rng).astype(np.float32)
        ref_sm, ref_lsm = reference(x)
        row_sm, row_lsm = {}, {}
        for name, isa in libs.items():
            with fs._api.use_backend(isa):
                row_sm[name] = softmax_ulp(fs.softmax(x, threads=1), ref_sm)
                row_lsm[name] = log_softmax_units(fs.log_softmax(x, threads=1), ref_lsm)
        for name, (sm, lsm) in others.items():
            row_sm[name] = softmax_ulp(np.asarray(sm(x), np.float32), ref_sm)
            row_lsm[name] = log_softmax_units(np.asarray(lsm(x), np.float32), ref_lsm)
        results["softmax"][case] = row_sm
        results["log_softmax"][case] = row_lsm
        print(case, {k: round(v, 2) for k, v in row_sm.items()}, flush=True)

    info = describe({}, {"version": fs.__version__, "backend": fs.backend()})
    when = info["date"]
    lines = [
        "### Accuracy (float32)",
        "",
        f"Measured by `python bench/accuracy.py` on {one_line(info)}, {when}. "
        "Softmax: largest error in ULP against the float64 softmax of the same float32 inputs, "
        "over outputs in the normal range. log_softmax: largest error in units of "
        "max(ULP of the output, 1e-7 / 2), so 2.0 is the bound of 2 ULP or 1e-7.",
        "",
    ]
    for fn, title in (("softmax", "softmax, max ULP"), ("log_softmax", "log_softmax, max error / max(ULP, 5e-8)")):
        lines += [f"| {title} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for case, row in results[fn].items():
            lines.append(f"| {case} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "date": when, "results": results}, indent=2))


if __name__ == "__main__":
    main()
