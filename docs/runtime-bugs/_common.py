"""Shared by the repro scripts beside it: save a model, run it in onnxruntime and in the runtime."""

from __future__ import annotations

import os
from typing import Dict, List, Union

import numpy as np
import onnx


def save(model: onnx.ModelProto, directory: str) -> str:
    """Check ``model`` (it is valid ONNX) and write it as ``directory/model.onnx``."""
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(directory, "model.onnx")
    onnx.save(model, path)
    return path


def onnxruntime(path: str, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def openvino(path: str, feeds: Dict[str, np.ndarray]) -> Union[List[np.ndarray], str]:
    """OpenVINO CPU in f32: the outputs, or the text of its refusal."""
    import openvino as ov

    try:
        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return [np.asarray(v) for v in compiled(list(feeds.values())).values()]
    except RuntimeError as e:
        return str(e)


def tract(path: str, feeds: Dict[str, np.ndarray]) -> Union[List[np.ndarray], str]:
    """tract: the outputs, or the text of its refusal."""
    import tract as tr

    try:
        model = tr.onnx().load(path).into_model().into_runnable()
        return [t.to_numpy() for t in model.run(list(feeds.values()))]
    except tr.TractError as e:
        return str(e)


def report(got: Union[List[np.ndarray], str], want: List[np.ndarray]) -> None:
    """Print the refusal, or each output's max relative difference to onnxruntime."""
    if isinstance(got, str):
        print("refused:\n" + got.strip())
        return
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        err = float(np.max(np.abs(g - w)) / max(float(np.max(np.abs(w))), 1e-30))
        print(f"output {i}: max |runtime - onnxruntime| / max |onnxruntime| = {err:.2e}")
