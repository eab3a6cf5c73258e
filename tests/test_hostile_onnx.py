"""Crafted ONNX files are checked as .safetensors files are: metadata by the one checker, the graph
against what a ResNet export contains, and the two against each other, before anything runs."""

from __future__ import annotations

import json

import pytest
import torch

from resnetlab import ResnetlabError, create_model
from resnetlab.cli import main

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from resnetlab.infer.int8 import quantize_model  # noqa: E402
from resnetlab.infer.onnxfile import read_onnx  # noqa: E402
from resnetlab.models.weights import META_KEY  # noqa: E402

SMALL = {"layers": [1, 1, 1], "widths": [4, 4, 4], "stem_width": 4}


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, in_chans=1, **SMALL).eval()
    meta = {**model.resnetlab_config, "classes": ["a", "b", "c"], "mean": [0.5], "std": [0.25]}
    path = tmp_path_factory.mktemp("int8") / "m.int8.onnx"
    quantize_model(model, meta, torch.randn(32, 1, 8, 8), path)
    return path


def _crafted(src, dst, *, meta=None, edit=None):
    proto = onnx.load(str(src))
    if meta is not None:
        old = json.loads({m.key: m.value for m in proto.metadata_props}[META_KEY])
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps({**old, **meta}, allow_nan=True)
    if edit is not None:
        edit(proto)
    onnx.save(proto, str(dst))
    return dst


def test_the_honest_file_reads(int8_file):
    _, meta = read_onnx(int8_file)
    assert meta["num_classes"] == 3 and meta["input_size"] == [1, 8, 8]


def _loop(proto):
    body = onnx.helper.make_graph([], "body", [], [])
    node = onnx.helper.make_node("Loop", ["n", "", ""], [], body=body, name="forever")
    proto.graph.node.append(node)


def _custom(proto):
    proto.graph.node.append(onnx.helper.make_node("Evil", [], ["z"], domain="com.evil", name="x"))


def _drop_conv(proto):
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    conv.op_type = "Identity"
    del conv.attribute[:]


@pytest.mark.parametrize(
    ("meta", "edit", "expected"),
    [
        ({"std": [float("nan")]}, None, "metadata std is \\[NaN\\]"),
        ({"num_classes": 100_000_000}, None, "num_classes 100000000 but the graph's output"),
        ({"options": {**SMALL, "layers": [200_000, 1, 1]}}, None, "ask for 200002 blocks"),
        ({"options": {**SMALL, "layers": [2, 1, 1]}}, None, "with 9 convolutions, but the graph"),
        ({"input_size": [3, 8, 8]}, None, "input_size \\[3, 8, 8\\] but the graph takes"),
        (None, _loop, "operator Loop .* is not one a ResNet export contains"),
        (None, _custom, "operator com.evil.Evil"),
        (None, _drop_conv, "with 7 convolutions, but the graph has 6"),
    ],
)
def test_crafted_int8_files_are_refused_before_use(int8_file, tmp_path, meta, edit, expected):
    bad = _crafted(int8_file, tmp_path / "bad.int8.onnx", meta=meta, edit=edit)
    with pytest.raises(ResnetlabError, match=expected):
        read_onnx(bad)


@pytest.mark.parametrize("command", ["eval", "predict", "bench"])
def test_every_command_refuses_a_looping_graph_in_one_line(int8_file, tmp_path, capsys, command):
    bad = _crafted(int8_file, tmp_path / "loop.int8.onnx", edit=_loop)
    argv = {
        "eval": ["eval", bad, "--data", tmp_path / "none.npz"],
        "predict": ["predict", bad, tmp_path / "none.png"],
        "bench": ["bench", bad, "--batch-size", "1"],
    }[command]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "operator Loop" in err


def test_a_fifo_is_not_read_as_an_onnx_file(tmp_path):
    import os

    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ResnetlabError, match="not a regular file"):
        read_onnx(fifo)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from resnetlab import save_weights

    torch.manual_seed(0)
    model = create_model("resnet20", features_only=True, in_chans=1, **SMALL)
    path = tmp_path_factory.mktemp("backbone") / "bb.safetensors"
    save_weights(model, path, {"mean": [0.5], "std": [0.25], "input_size": [1, 8, 8]})
    return path


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_a_backbone_exports_as_a_graph_with_one_output_per_feature_map(
    backbone, tmp_path, capsys, fmt
):
    from resnetlab.infer.export import run_onnx
    from resnetlab.models import load_model

    out = tmp_path / ("bb.onnx" if fmt == "onnx" else "bb.pt2")
    assert main(["export", str(backbone), "--format", fmt, "--out", str(out)]) == 0
    capsys.readouterr()
    model, _ = load_model(backbone)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        ref = model.eval()(x)
        got = run_onnx(out, x) if fmt == "onnx" else torch.export.load(str(out)).module()(x)
    assert isinstance(got, (list, tuple)) and len(ref) == 3
    assert [g.shape for g in got] == [r.shape for r in ref]
    assert all(torch.allclose(g, r, atol=1e-4) for g, r in zip(got, ref))


@pytest.mark.parametrize("command", ["bench", "eval", "predict", "quantize"])
def test_a_backbone_where_a_classifier_is_needed_is_one_line(backbone, tmp_path, capsys, command):
    argv = {
        "bench": ["bench", backbone, "--batch-size", "1"],
        "eval": ["eval", backbone, "--data", tmp_path / "none.npz"],
        "predict": ["predict", backbone, tmp_path / "x.png"],
        "quantize": ["quantize", backbone, "--calib", tmp_path / "none.npz"],
    }[command]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unexpected" not in err and ("backbone" in err or "head" in err or "feature" in err)
