"""Reading an ONNX file that claims to be a resnetlab model: its metadata and its graph, checked.

An ONNX file is a protobuf: reading it runs no code, but running it runs its graph, and its metadata
tells predict, eval and bench what to build. Both are checked before use, as a .safetensors file's
are:
- the metadata by the one checker of weights metadata (models.metadata.check_metadata: NaN std,
  negative counts, malformed options are refused);
- the graph holds only the operators a ResNet export contains (convolutions, batch norm, pooling,
  the fc, the shortcuts' padding and slicing, int8 quantize/dequantize pairs): no control flow
  (Loop, If, Scan), no sub-graphs, no custom domains, so a crafted graph cannot loop forever;
- the graph's input and output agree with the metadata (channels, image size, classes);
- the architecture the metadata names has as many convolutions as the graph (a crafted `options`
  asking for 200,000 blocks is refused before anything is built).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ResnetlabError
from ..models.metadata import parse_metadata
from ..models.weights import META_KEY

# every operator of the fp32 and int8 exports of each model family here (measured: resnet option
# A/B/C, plain, pre-activation, wide, bottleneck, ResNeXt, dilated, MLPs), and a few siblings that
# other pooling choices give
RESNET_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant",
        "ConstantOfShape", "Conv", "DequantizeLinear", "Div", "Dropout", "Flatten", "Gather",
        "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Identity", "MatMul", "MaxPool", "Mul",
        "Pad", "QuantizeLinear", "ReduceMax", "ReduceMean", "Relu", "Reshape", "Shape", "Slice",
        "Squeeze", "Sub", "Transpose", "Unsqueeze",
    }
)  # fmt: skip
STANDARD_DOMAINS = ("", "ai.onnx")
MAX_NODES = 200_000  # ResNet-1202 exports to about 3,700


def read_onnx(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """(ModelProto, resnetlab metadata or {}) of an ONNX file, its graph and metadata checked."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise ResnetlabError(f"ONNX file not found: {p}")
    if not p.is_file():
        raise ResnetlabError(f"{p} is not a regular file (an ONNX model is read from a file)")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others for a file that is not ONNX
        raise ResnetlabError(f"{p}: not a readable ONNX file ({type(e).__name__})") from None
    check_graph(proto, str(p))
    meta = parse_metadata({m.key: m.value for m in proto.metadata_props}.get(META_KEY), str(p))
    if meta:
        check_graph_fits(proto, meta, str(p))
    return proto, meta


def check_graph(proto: Any, source: str) -> None:
    """Refuse a graph with operators a ResNet export never contains, control flow, sub-graphs or
    another domain's operators."""
    import onnx

    nodes = proto.graph.node
    if len(nodes) > MAX_NODES:
        raise ResnetlabError(f"{source}: {len(nodes)} graph nodes; a ResNet has far fewer")
    if proto.functions:
        raise ResnetlabError(f"{source}: the graph defines functions; a ResNet export has none")
    for node in nodes:
        if node.domain not in STANDARD_DOMAINS or node.op_type not in RESNET_OPS:
            op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            raise ResnetlabError(
                f"{source}: operator {op} (node {node.name!r}) is not one a ResNet export "
                "contains; refused"
            )
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ResnetlabError(f"{source}: node {node.name!r} carries a sub-graph; refused")
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    for init in proto.graph.initializer:  # NaN weights would predict NaN, and exit 0
        if init.data_location == onnx.TensorProto.EXTERNAL or init.external_data:
            raise ResnetlabError(
                f"{source}: initializer {init.name!r} keeps its data in another file; a ResNet "
                "export holds its weights inside the .onnx file"
            )
        try:
            values = onnx.numpy_helper.to_array(init)
        except Exception as e:  # noqa: BLE001 - its shape and data disagree, or worse
            raise ResnetlabError(
                f"{source}: initializer {init.name!r} is not readable ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); corrupt or crafted file"
            ) from None
        if init.data_type in floats and not np.isfinite(values).all():
            raise ResnetlabError(
                f"{source}: initializer {init.name!r} holds NaN or infinite values; expected "
                "finite weights"
            )


def _dims(value_info: Any) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def graph_input_size(proto: Any) -> list[int] | None:
    """The graph's input size without the batch ([C, H, W] or [features]), or None where a
    dimension other than the batch is not fixed."""
    graph = proto.graph
    init = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init]
    if len(inputs) != 1:
        return None
    dims = _dims(inputs[0])[1:]
    return [int(d) for d in dims] if dims and all(d for d in dims) else None


def graph_outputs(proto: Any) -> list[list[int | None]]:
    """The shape of each graph output (None for a dimension that is not fixed)."""
    return [_dims(o) for o in proto.graph.output]


def check_graph_fits(proto: Any, meta: dict[str, Any], source: str) -> None:
    """Refuse metadata that does not describe the graph: input channels and size, class count,
    and the number of convolutions of the architecture it names."""
    graph = proto.graph
    init = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ResnetlabError(
            f"{source}: {len(inputs)} inputs and {len(graph.output)} outputs; a classifier "
            "export has one of each"
        )
    shape_in, shape_out = _dims(inputs[0])[1:], _dims(graph.output[0])
    size = meta.get("input_size")
    static = bool(shape_in) and all(d is not None for d in shape_in)
    if size is not None and static and list(size) != shape_in:
        raise ResnetlabError(
            f"{source}: metadata input_size {list(size)} but the graph takes {shape_in}"
        )
    n = meta.get("num_classes")
    if n is not None and (len(shape_out) != 2 or shape_out[1] != n):
        raise ResnetlabError(
            f"{source}: metadata num_classes {n} but the graph's output is {shape_out}"
        )
    if isinstance(meta.get("name"), str):
        _check_architecture(graph, meta, source)


def _check_architecture(graph: Any, meta: dict[str, Any], source: str) -> None:
    """The metadata's architecture has as many convolutions as the graph (checked on the meta
    device, after bounding the blocks it asks for by the graph's size)."""
    import torch
    from torch import nn

    from ..models.builder import blocks_asked, build_model_with_cfg
    from ..models.registry import get_entry

    name, options = meta["name"], dict(meta.get("options") or {})
    entry = get_entry(name)
    blocks, said = blocks_asked(entry, options)
    if blocks > len(graph.node):
        raise ResnetlabError(
            f"{source}: metadata options {said} ask for {blocks} blocks, but the graph has only "
            f"{len(graph.node)} nodes"
        )
    convs = sum(node.op_type == "Conv" for node in graph.node)
    if entry.is_mlp:
        return
    try:
        with torch.device("meta"):
            skeleton = build_model_with_cfg(
                entry, num_classes=meta.get("num_classes"), in_chans=meta.get("in_chans"), **options
            )
    except ResnetlabError as e:
        raise ResnetlabError(f"{source}: its metadata names no buildable model ({e})") from None
    want = sum(isinstance(m, nn.Conv2d) for m in skeleton.modules())
    if want != convs:
        raise ResnetlabError(
            f"{source}: metadata describes {name} with {want} convolutions, but the graph has "
            f"{convs}"
        )
