"""The third hostile pass: crafted files that reached a bare exception or a huge allocation
(float8 weights, a metadata number of 5,000 digits, ONNX initializers that lie or live in another
file, a malformed download response, a cache header whose size wraps), each ending in one clear
line, or read correctly where the file is good."""

from __future__ import annotations

import http.client
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_hostile_pass2 import one_error_line, run, tiny_weights

from resnetlab.data import download as dl
from resnetlab.errors import ResnetlabError


def _float8_copy(good, bad, nan: bool = False):
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    state = {
        k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v
        for k, v in load_file(good).items()
    }
    if nan:
        state["fc.weight"].view(torch.uint8)[0, 0] = 0x7F  # NaN in e4m3fn
    save_file(state, bad, metadata=meta)
    return bad


def test_float8_weights_are_read_and_their_nan_refused(tmp_path, capsys):
    good = tiny_weights(tmp_path / "w.safetensors")
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    f8 = _float8_copy(good, tmp_path / "f8.safetensors")
    rc, out, err = run(capsys, "predict", f8, tmp_path / "x.png", "--device", "cpu")
    assert rc == 0 and "cat" in out, err
    nan = _float8_copy(good, tmp_path / "nan.safetensors", nan=True)
    rc, out, err = run(capsys, "predict", nan, tmp_path / "x.png", "--device", "cpu")
    assert rc == 2 and out == ""
    assert "tensor fc.weight holds NaN or infinite values" in one_error_line(err, "predict")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mean": [0.1, 0.2, 0.3, 0.4]}, "its metadata mean has 4 values for input_size [1, 8, 8]"),
        ({"classes": ["a", "b", "c"]}, "its metadata classes has 3 names but the model has 2"),
    ],
)
def test_metadata_that_does_not_fit_the_net_is_refused_not_dropped(tmp_path, capsys, change,
                                                                   message):  # fmt: skip
    # before: the 3 names were dropped (outputs unnamed) and the 4 means cycled over 1 channel
    good = tiny_weights(tmp_path / "w.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["resnetlab"])
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(good), bad, metadata={"resnetlab": json.dumps({**meta, **change})})
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    rc, out, err = run(capsys, "predict", bad, tmp_path / "x.png", "--device", "cpu")
    assert rc == 2 and out == ""
    assert message in one_error_line(err, "predict")


def test_metadata_with_a_number_of_5000_digits_is_not_valid_json(tmp_path, capsys):
    good = tiny_weights(tmp_path / "w.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["resnetlab"])
    text = json.dumps(meta)[:-1] + ', "epochs": ' + "9" * 5000 + "}"
    bad = tmp_path / "big.safetensors"
    save_file(load_file(good), bad, metadata={"resnetlab": text})
    rc, out, err = run(capsys, "predict", bad, tmp_path / "x.png", "--device", "cpu")
    assert rc == 2 and "metadata is not valid JSON" in one_error_line(err, "predict")


@pytest.mark.parametrize("how", ["external", "short"])
def test_onnx_initializers_that_lie_or_live_elsewhere_are_refused(tmp_path, capsys, how):
    onnx = pytest.importorskip("onnx")
    weights = tiny_weights(tmp_path / "w.safetensors")
    rc, _, err = run(capsys, "export", weights, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert rc == 0, err
    proto = onnx.load(str(tmp_path / "m.onnx"))
    fc = next(t for t in proto.graph.initializer if t.name == "fc.weight")
    if how == "external":  # its data "in another file", relative to wherever the reader runs
        fc.ClearField("raw_data")
        fc.data_location = onnx.TensorProto.EXTERNAL
        fc.external_data.add(key="location", value="../../etc/weights.bin")
        message = "initializer 'fc.weight' keeps its data in another file"
    else:  # the stated shape asks for more values than the data holds
        fc.dims[0] = fc.dims[0] * 1000
        message = "initializer 'fc.weight' is not readable"
    (tmp_path / "bad.onnx").write_bytes(proto.SerializeToString())
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    rc, out, err = run(capsys, "predict", tmp_path / "bad.onnx", tmp_path / "x.png")
    assert rc == 2 and out == ""
    assert message in one_error_line(err, "predict")


def test_a_malformed_download_response_tries_the_next_mirror(tmp_path, monkeypatch):
    payload = b"the dataset"
    import hashlib

    sha = hashlib.sha256(payload).hexdigest()

    def urlopen(url, timeout):
        if "first" in url:
            raise http.client.IncompleteRead(b"the da", 5)
        return io.BytesIO(payload)

    monkeypatch.setattr(dl.urllib.request, "urlopen", urlopen)
    got = dl.download(["https://first/x.gz", "https://second/x.gz"], tmp_path / "x.gz", sha)
    assert got.read_bytes() == payload
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda url, timeout: (_ for _ in ()).throw(
        http.client.BadStatusLine("HTTP/9 ???")))  # fmt: skip
    with pytest.raises(ResnetlabError, match="download of y.gz failed: https://a/y.gz: ") as e:
        dl.download(["https://a/y.gz"], tmp_path / "y.gz", sha)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gz"]  # nothing half-written


def test_a_cache_header_whose_size_wraps_is_found_truncated(tmp_path):
    from resnetlab.data.npyfile import open_npy

    shape = (4, 2**62 + 1, 1, 1)  # 2**64 + 4 bytes: np.prod wraps to 4
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    f = tmp_path / "images.npy"
    f.write_bytes(buf.getvalue() + bytes(4))
    with pytest.raises(ResnetlabError, match="truncated"):
        open_npy(f, shape, in_memory=False)
