"""Your ONNX: a run directory whose model is an ONNX classifier handed over as a file.

`import_onnx(out, path, data=...)` checks that the graph is a classifier edgerobust can drive — one float input of
rank 4 (N×C×H×W) and one output of rank 2 (N×classes), opened by onnxruntime (an operator no runtime implements is
refused by name) — and writes `out/model.onnx`, the same graph with:
- its input named `input` and its output `logits` (the names every bundle uses);
- a dynamic batch axis (a graph whose operators fix the batch, e.g. a Reshape to [1, -1], is refused: re-export it);
- spatial axes that were dynamic fixed to the dataset's shape;
- `--mean/--std` prepended as Sub/Div nodes where the graph expects normalised inputs, so it takes [0,1] pixels.
The manifest's `model` has `format = "onnx"`, and `source` records the original file (path, sha256, opset, names) and
whether a PyTorch conversion is available (models/onnx_model.py `convert_to_torch`: onnx2torch, with its parity
against onnxruntime). `RunDir.load_model` then returns the graph as a module (onnxruntime behind `forward`), so
evaluation, export (the given graph, converted in opset only where the target needs a lower one), verify, bench,
device replay and the query-only Square attack take the run. Training and pruning need PyTorch weights and refuse it.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..claim import check_output, locked
from ..errors import EdgeRobustError
from ..io import sha256_file
from ..models.onnx_model import OnnxClassifier, conversion_status
from ..run import RunDir
from ..training.api import check_fresh_output, model_info
from ..training.metrics import evaluate_clean
from .setup import ImportSetup

INPUT_NAME, OUTPUT_NAME = "input", "logits"  # the bundle's names (export/onnx_export.py)
ONNX_FILE = "model.onnx"


class OnnxImportError(EdgeRobustError):
    """An ONNX file that is not a classifier edgerobust can drive (inputs, outputs, shapes, operators)."""


def read_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise OnnxImportError(f"ONNX file {path} does not exist")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001  (protobuf and the checker raise many kinds on a damaged file)
        raise OnnxImportError(f"{path} is not a valid ONNX model ({_first_line(exc)})") from None
    return proto


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def image_io(proto: onnx.ModelProto, path: Path) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    """The one image input and the one logits output, or the line saying what the graph has instead."""
    constants = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise OnnxImportError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a classifier "
                              "takes one image batch")
    if len(proto.graph.output) != 1:
        raise OnnxImportError(f"{path} has {len(proto.graph.output)} outputs "
                              f"({', '.join(o.name for o in proto.graph.output)}); a classifier returns one logits "
                              "tensor")
    image, logits = inputs[0], proto.graph.output[0]
    kind = image.type.tensor_type.elem_type
    if kind != TensorProto.FLOAT or len(_dims(image)) != 4:
        raise OnnxImportError(f"{path}: input '{image.name}' is {TensorProto.DataType.Name(kind).lower()} of shape "
                              f"{_dims(image)}; an image classifier takes float N×C×H×W")
    if len(_dims(logits)) != 2:
        raise OnnxImportError(f"{path}: output '{logits.name}' has shape {_dims(logits)}; a classifier returns "
                              "N×classes logits")
    return image, logits


def _rename(proto: onnx.ModelProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in proto.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        if value.name == old:
            value.name = new


def _set_dims(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    for dim, size in zip(value.type.tensor_type.shape.dim, dims, strict=True):
        if isinstance(size, int):
            dim.dim_value = size
        else:
            dim.dim_param = size


def fitted_graph(proto: onnx.ModelProto, path: Path, shape: tuple[int, int, int] | None,
                 mean: list[float] | None, std: list[float] | None) -> tuple[onnx.ModelProto, tuple[int, int, int]]:
    """The graph with bundle names, a dynamic batch, fixed C×H×W and the normalisation prepended (see the module
    docstring), and its input shape."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    image, logits = image_io(proto, path)
    dims = _dims(image)
    given = [d if isinstance(d, int) and d > 0 else None for d in dims[1:]]
    if shape is not None:
        clash = [f"{a} vs {b}" for a, b in zip(given, shape, strict=True) if a is not None and a != b]
        if clash:
            raise OnnxImportError(f"{path} takes inputs of C×H×W {dims[1:]} but the dataset's are {list(shape)}")
        fixed = tuple(shape)
    elif None in given:
        raise OnnxImportError(f"{path}: input '{image.name}' has dynamic axes {dims[1:]}; pass --data (its images "
                              "fix them) or --shape C,H,W")
    else:
        fixed = tuple(given)  # type: ignore[assignment]
    _rename(proto, image.name, INPUT_NAME)
    _rename(proto, logits.name, OUTPUT_NAME)
    image, logits = image_io(proto, path)
    _set_dims(image, ["batch", *fixed])
    _set_dims(logits, ["batch", _dims(logits)[1]])
    del proto.graph.value_info[:]  # shapes inferred for the old batch; inference below fills them anew
    if mean is not None or std is not None:
        channels = fixed[0]
        mean, std = list(mean or [0.0] * channels), list(std or [1.0] * channels)
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise OnnxImportError(f"--mean/--std must give {channels} numbers (std > 0), got {mean} and {std}")
        _rename(proto, INPUT_NAME, "normalised_input")
        image.name = INPUT_NAME
        first = [onnx.NodeProto.FromString(n.SerializeToString()) for n in proto.graph.node]
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.array(mean, np.float32).reshape(1, -1, 1, 1), "edgerobust_mean"),
            numpy_helper.from_array(np.array(std, np.float32).reshape(1, -1, 1, 1), "edgerobust_std")])
        del proto.graph.node[:]
        proto.graph.node.extend([helper.make_node("Sub", [INPUT_NAME, "edgerobust_mean"], ["centred_input"]),
                                 helper.make_node("Div", ["centred_input", "edgerobust_std"], ["normalised_input"]),
                                 *first])
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001
        raise OnnxImportError(f"{path}: the graph does not take a dynamic batch of {list(fixed)} images "
                              f"({_first_line(exc)}); re-export it with a dynamic batch axis") from None
    return proto, fixed


def check_runs(file: Path, source: Path, shape: tuple[int, int, int], classes: int | None) -> int:
    """Open the graph in onnxruntime and run batches of 1 and 3: the number of classes, or the line saying why not."""
    model = OnnxClassifier(file, INPUT_NAME, OUTPUT_NAME)
    import torch

    try:
        model.session()
    except EdgeRobustError as exc:
        raise OnnxImportError(f"{source}: {exc}; replace the operator it names or export at another opset") from None
    outputs = []
    for batch in (1, 3):
        try:
            outputs.append(model(torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))))
        except Exception as exc:  # noqa: BLE001  (onnxruntime's run errors)
            raise OnnxImportError(f"{source}: running a batch of {batch} failed ({_first_line(exc)}); a graph "
                                  "whose operators fix the batch size must be re-exported with a dynamic batch "
                                  "axis") from None
    if outputs[1].shape[0] != 3 or outputs[0].shape[1] != outputs[1].shape[1] or outputs[0].shape[1] < 2:
        raise OnnxImportError(f"{source}: outputs of shape {tuple(outputs[0].shape)} and {tuple(outputs[1].shape)} "
                              "for batches of 1 and 3; a classifier returns N×classes logits (classes ≥ 2)")
    found = int(outputs[0].shape[1])
    if classes is not None and found != classes:
        raise OnnxImportError(f"{source} returns {found} logits but the dataset has {classes} classes")
    return found


def import_onnx(out: str | Path, path: str | Path, setup: ImportSetup | None = None) -> RunDir:
    """A run directory at `out` whose model is the ONNX classifier at `path` (see the module docstring); `setup` says
    the dataset, or the input shape without one, and the mean/std to prepend."""
    setup = setup or ImportSetup()
    path = Path(path)
    data, input_shape, mean, std = setup.data, setup.input_shape, setup.mean, setup.std
    check_output(out)
    check_fresh_output(Path(out), resume=False)
    proto = read_onnx(path)
    test = setup.load("test") if data else None
    if test is not None and input_shape is not None and tuple(input_shape) != test.input_shape:
        raise OnnxImportError(f"--shape {tuple(input_shape)} differs from dataset {data}'s {test.input_shape}")
    fitted, shape = fitted_graph(proto, path, test.input_shape if test is not None else input_shape, mean, std)
    with locked(out):
        check_fresh_output(Path(out), resume=False)
        run = RunDir.create(out)
        file = run.file(ONNX_FILE)
        try:
            onnx.save_model(fitted, str(file))
            classes = check_runs(file, path, shape, test.num_classes if test is not None else None)
        except BaseException:
            file.unlink(missing_ok=True)  # nothing half-made is left (the lock removes the empty directory)
            raise
        module = OnnxClassifier(file, INPUT_NAME, OUTPUT_NAME)
        channels = shape[0]
        source: dict[str, Any] = {
            "kind": "onnx", "file": str(path.resolve()), "sha256": sha256_file(path),
            "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "input": image_io(proto, path)[0].name, "output": image_io(proto, path)[1].name,
            "normalisation_added": mean is not None or std is not None,
            "torch_conversion": conversion_status(file, INPUT_NAME, OUTPUT_NAME, shape)}
        info = model_info(f"onnx:{path.name}", SimpleNamespace(input_shape=shape, num_classes=classes),
                          ([0.0] * channels, [1.0] * channels), source)
        info.update(format="onnx", file=ONNX_FILE)  # the graph takes [0,1] pixels (mean/std are inside it)
        parameters = sum(int(np.prod(init.dims)) for init in fitted.graph.initializer)
        metrics: dict[str, Any] = {"parameters": parameters}
        sections: dict[str, Any] = {"metrics": metrics, "recipe": setup.recipe or {},
                                    "imported": {"onnx": str(path.resolve()), "format": "onnx"}}
        if test is not None:
            metrics["test_accuracy"] = evaluate_clean(module, test)["accuracy"]
            sections["dataset"] = setup.dataset_record(test)
        run.manifest["model"] = info
        run.manifest.update(sections)
        run.manifest["weights_sha256"] = sha256_file(file)
        run.save_manifest()
    return run
