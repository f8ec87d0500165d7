"""Child process of the memory measurement: ``python -m speechnas.hardware._memprobe SPEC``.

It imports the runtime, records its resident set size, resets the kernel's peak counter
(``/proc/self/clear_refs``), loads and runs every model of SPEC once and prints
``{"base": bytes, "peak": bytes}``: the increase is what the models cost, not the runtime.
Linux only; elsewhere it prints a null peak.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status_bytes(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
    except OSError:
        return False
    return True


def main(spec_path: str) -> None:
    import numpy as np

    spec = json.loads(Path(spec_path).read_text())
    parts = spec["parts"]
    if spec["runtime"] == "onnxruntime":
        import onnxruntime as ort

        def load(path: str) -> object:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = spec["threads"]
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def run(model: object, feeds: dict[str, np.ndarray]) -> None:
            model.run(None, feeds)  # type: ignore[attr-defined]

    else:
        import torch

        torch.set_num_threads(spec["threads"])

        def load(path: str) -> object:
            # A module this package pickled a moment ago for this very probe.
            return torch.load(path, weights_only=False).eval()

        def run(model: object, feeds: dict[str, np.ndarray]) -> None:
            with torch.inference_mode():
                model(*(torch.from_numpy(v) for v in feeds.values()))  # type: ignore[operator]

    inputs = []
    for part in parts:
        with np.load(part["feeds"]) as data:
            inputs.append({n: data[n] for n in part["names"]})
    base = _status_bytes("VmRSS")
    ok = base is not None and _reset_peak()
    models = [load(p["model"]) for p in parts]
    for model, feeds in zip(models, inputs, strict=True):
        run(model, feeds)
    peak = _status_bytes("VmHWM") if ok else None
    print(json.dumps({"base": base, "peak": peak}))


if __name__ == "__main__":
    main(sys.argv[1])
