"""The int8 form is chosen by measurement: U8S8 and S8S8 made from one calibration, timed on every
runtime installed and checked against fp32, the fastest at equal accuracy kept and recorded in the
file; reduce_range where the CPU lacks VNNI; every Q/DQ node with constants of its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetlab import create_model, save_weights
from resnetlab.cli import main
from resnetlab.hardware import cpu_features

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from resnetlab.infer.int8 import (  # noqa: E402
    AGREEMENT_TOLERANCE,
    FormTrial,
    choose_form,
    quantize_model,
    separate_qdq_constants,
)
from resnetlab.infer.onnxfile import read_onnx  # noqa: E402
from resnetlab.infer.quantize import quantize  # noqa: E402


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))


def tiny_model():
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=3, in_chans=1, layers=(1, 1, 1),
                        widths=(4, 8, 8), stem_width=4).eval()  # fmt: skip


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    w = tmp_path / "w.safetensors"
    save_weights(tiny_model(), w, {"input_size": [1, 8, 8], "mean": [0.5], "std": [0.25],
                                   "classes": ["a", "b", "c"]})  # fmt: skip
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=rng.integers(0, 255, (40, 8, 8), np.uint8), y_train=np.arange(40) % 3,
             x_test=rng.integers(0, 255, (9, 8, 8), np.uint8), y_test=np.arange(9) % 3)  # fmt: skip
    return w, data


def test_quantize_measures_both_forms_and_records_the_choice(tiny, tmp_path, capsys):
    w, data = tiny
    out = tmp_path / "w.int8.onnx"
    rc = main([str(a) for a in ("quantize", w, "--calib", data, "--images", "32", "--out", out,
                                "--bench-batch", "0")])  # fmt: skip
    stdout = capsys.readouterr().out
    assert rc == 0
    q = read_onnx(out)[1]["quantization"]
    assert q["form"] in ("U8S8", "S8S8") and f"form: {q['form']}, the fastest" in stdout
    measured = q["measured"]
    assert set(measured["forms"]) == {"U8S8", "S8S8"} and measured["threads"] == 1
    for trial in measured["forms"].values():
        assert 0 <= trial["top1_agreement"] <= 1
        assert trial["images_per_s"]["onnxruntime"] > 0
    assert q["chosen"].startswith(q["form"]) and "onnxruntime" in q["chosen"]
    assert q["reduce_range"] is (not cpu_features()["VNNI"])
    assert "uint8" in q["activations"] if q["form"] == "U8S8" else "int8" in q["activations"]


def test_a_form_asked_for_is_written_without_measuring(tiny, tmp_path):
    w, data = tiny
    rep = quantize(w, calib=str(data), images=32, out=tmp_path / "s.onnx", bench_batch=0,
                   form="S8S8")  # fmt: skip
    q = read_onnx(tmp_path / "s.onnx")[1]["quantization"]
    assert rep.form == q["form"] == "S8S8" and "measured" not in q
    assert q["activations"].startswith("int8")


def test_the_fastest_form_at_equal_accuracy_is_kept():
    def trial(form, agree, ort, ov=None):
        speeds = {"onnxruntime": ort, **({"openvino": ov} if ov is not None else {})}
        return FormTrial(form, f"{form}.onnx", agree, speeds)

    # ONNX Runtime alone: the faster form
    assert choose_form([trial("U8S8", 0.99, 44.0), trial("S8S8", 0.99, 19.0)])[0].form == "U8S8"
    # OpenVINO runs both alike: of forms as fast, the one ONNX Runtime runs faster
    pick, why = choose_form([trial("U8S8", 0.99, 44.0, 47.0), trial("S8S8", 0.99, 19.0, 48.0)])
    assert pick.form == "U8S8" and "S8S8: onnxruntime 19.0, openvino 48.0" in why
    # a form that agrees less with fp32 than the tolerance allows loses, however fast
    slow_exact, fast_wrong = trial("S8S8", 0.999, 19.0), trial("U8S8", 0.98, 44.0)
    assert AGREEMENT_TOLERANCE < 0.999 - 0.98
    assert choose_form([fast_wrong, slow_exact])[0].form == "S8S8"
    # within the tolerance: equal accuracy, speed decides
    assert choose_form([trial("U8S8", 0.997, 44.0), slow_exact])[0].form == "U8S8"


def test_reduce_range_where_the_cpu_lacks_vnni(tmp_path, monkeypatch):
    import resnetlab.infer.int8 as int8_module

    real = int8_module.cpu_features
    monkeypatch.setattr(int8_module, "cpu_features", lambda: {**real(), "VNNI": False})
    model = tiny_model()
    meta = {**model.resnetlab_config, "classes": ["a", "b", "c"], "mean": [0.5], "std": [0.25]}
    q = quantize_model(model, meta, torch.randn(32, 1, 8, 8), tmp_path / "r.onnx", forms=("U8S8",))
    assert q["reduce_range"] is True and "7-bit" in q["weights"]
    proto = onnx.load(str(tmp_path / "r.onnx"))
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8
               and len(t.dims) == 4]  # fmt: skip
    peak = max(int(np.abs(onnx.numpy_helper.to_array(t)).max()) for t in weights)
    assert peak <= 64  # 7-bit weights: [-64, 63]


def test_every_qdq_node_has_constants_of_its_own(tmp_path):
    model = tiny_model()
    meta = {**model.resnetlab_config, "classes": ["a", "b", "c"], "mean": [0.5], "std": [0.25]}
    quantize_model(model, meta, torch.randn(32, 1, 8, 8), tmp_path / "m.onnx", forms=("S8S8",))
    proto = onnx.load(str(tmp_path / "m.onnx"))
    names = [n.input[k] for n in proto.graph.node if n.op_type.endswith("QuantizeLinear")
             for k in (1, 2) if k < len(n.input)]  # fmt: skip
    assert len(names) == len(set(names)), "a scale or zero point shared by two Q/DQ nodes"
    assert separate_qdq_constants(proto) == 0  # nothing left to separate
    # the option-A shortcut's padding keeps its input's scale, in a copy of its own
    pads = [n for n in proto.graph.node if n.op_type == "Pad"]
    assert pads, "option A pads the shortcut's channels"
    json.dumps(read_onnx(tmp_path / "m.onnx")[1])  # and the file reads back, checked
