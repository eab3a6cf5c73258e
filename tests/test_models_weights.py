"""Weights in and out: torchvision layout, safetensors round trips, clear failures on mismatches."""

import json

import pytest
import torch
import torch.nn.functional as F

import resnetlab
from resnetlab.errors import ResnetlabError
from resnetlab.models.weights import read_metadata

# torchvision's ImageNet ResNets as its weight files describe them: one key list per depth
LAYOUTS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}


def _bn_keys(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}  # fmt: skip


def torchvision_layout(name, num_classes=1000):
    """Key -> shape of a torchvision state dict, written from its documented module names."""
    block, layers = LAYOUTS[name]
    keys = {"conv1.weight": (64, 3, 7, 7), **_bn_keys("bn1", 64)}
    cin = 64
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
        cout = planes * (4 if block == "bottleneck" else 1)
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            if block == "bottleneck":
                keys[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                keys[f"{p}.conv3.weight"] = (cout, planes, 1, 1)
                keys.update(_bn_keys(f"{p}.bn3", cout))
            else:
                keys[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
                keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update(_bn_keys(f"{p}.bn1", planes))
            keys.update(_bn_keys(f"{p}.bn2", planes))
            if j == 0 and (i > 0 or cin != cout):
                keys[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                keys.update(_bn_keys(f"{p}.downsample.1", cout))
            cin = cout
    keys["fc.weight"] = (num_classes, cin)
    keys["fc.bias"] = (num_classes,)
    return keys


def random_state(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif "bn" in k or "downsample.1" in k:
            state[k] = torch.randn(shape, generator=g) * 0.1 + (1.0 if k.endswith("weight") else 0)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state[k] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


def reference_forward(state, x, name):
    """torchvision's forward pass written as functions of the state dict (ResNet v1.5)."""
    block, layers = LAYOUTS[name]

    def bn(t, p):
        return F.batch_norm(t, state[f"{p}.running_mean"], state[f"{p}.running_var"],
                            state[f"{p}.weight"], state[f"{p}.bias"], False, 0.0, 1e-5)  # fmt: skip

    x = F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for i, n in enumerate(layers):
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            stride = 2 if (i > 0 and j == 0) else 1
            if block == "bottleneck":
                out = F.relu(bn(F.conv2d(x, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
                out = F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1)
                out = F.relu(bn(out, f"{p}.bn2"))
                out = bn(F.conv2d(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            else:
                out = F.conv2d(x, state[f"{p}.conv1.weight"], stride=stride, padding=1)
                out = F.relu(bn(out, f"{p}.bn1"))
                out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in state:
                w = state[f"{p}.downsample.0.weight"]
                x = bn(F.conv2d(x, w, stride=stride), f"{p}.downsample.1")
            x = F.relu(out + x)
    x = x.mean(dim=(2, 3))
    return F.linear(x, state["fc.weight"], state["fc.bias"])


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_module_names_and_shapes_are_torchvisions(name):
    own = {k: tuple(v.shape) for k, v in resnetlab.create_model(name).state_dict().items()}
    assert own == torchvision_layout(name)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_state_dict_loads_strictly_and_gives_the_same_logits(name, tmp_path):
    state = random_state(torchvision_layout(name))
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)  # a plain state dict, as torchvision publishes them
    model = resnetlab.create_model(name, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(state, x, name), atol=1e-5, rtol=0)


def test_state_dict_head_and_channels_decide_the_model_shape(tmp_path):
    state = random_state(torchvision_layout("resnet18", num_classes=37))
    state["conv1.weight"] = state["conv1.weight"][:, :1].contiguous()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    model = resnetlab.create_model("resnet18", pretrained=tmp_path / "w.pth")
    assert model.fc.out_features == 37 and model.conv1.in_channels == 1


def test_safetensors_round_trip_is_bit_exact_with_metadata(tmp_path):
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20", num_classes=7, in_chans=1, drop_rate=0.1)
    model.train()
    model(torch.randn(4, 1, 16, 16))  # move the BN running statistics away from their init
    meta = {"classes": list("abcdefg"), "input_size": [1, 16, 16], "mean": [0.3], "std": [0.2]}
    path = tmp_path / "m.safetensors"
    resnetlab.save_weights(model, path, meta)
    clone, read = resnetlab.load_model(path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), clone.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert read["classes"] == list("abcdefg") and read["name"] == "resnet20"
    assert read["options"] == {"drop_rate": 0.1} and read["in_chans"] == 1
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), clone(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_pretrained_path_rebuilds_options_from_metadata(tmp_path):
    model = resnetlab.create_model("resnet18", stem="small", num_classes=3)
    resnetlab.save_weights(model, tmp_path / "s.safetensors")
    again = resnetlab.create_model("resnet18", pretrained=tmp_path / "s.safetensors")
    assert again.conv1.kernel_size == (3, 3) and again.fc.out_features == 3


def test_weights_of_another_architecture_fail_naming_the_first_keys(tmp_path):
    resnetlab.save_weights(resnetlab.create_model("resnet18"), tmp_path / "r18.safetensors")
    model = resnetlab.create_model("resnet34")
    with pytest.raises(ResnetlabError, match=r"missing \d+ key\(s\): layer1\.2\.") as info:
        resnetlab.load_weights(model, tmp_path / "r18.safetensors")
    assert "\n" not in str(info.value)
    with pytest.raises(ResnetlabError, match="holds weights of 'resnet18', not 'resnet34'"):
        resnetlab.create_model("resnet34", pretrained=tmp_path / "r18.safetensors")


def test_weights_with_another_class_count_fail_naming_the_shapes(tmp_path):
    resnetlab.save_weights(
        resnetlab.create_model("resnet20", num_classes=10), tmp_path / "a.safetensors"
    )
    model = resnetlab.create_model("resnet20", num_classes=100)
    with pytest.raises(ResnetlabError, match=r"fc\.weight \(10, 64\) vs model \(100, 64\)"):
        resnetlab.load_weights(model, tmp_path / "a.safetensors")


def test_missing_corrupt_and_code_carrying_files_fail_clearly(tmp_path):
    model = resnetlab.create_model("resnet20")
    with pytest.raises(ResnetlabError, match="not found"):
        resnetlab.load_weights(model, tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ResnetlabError, match="not a readable safetensors file"):
        resnetlab.load_weights(model, bad)

    class Boom:
        def __reduce__(self):
            return (print, ("this must not run",))

    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": Boom()}, evil)
    with pytest.raises(ResnetlabError, match="not a loadable weights file"):
        resnetlab.load_weights(model, evil)


def test_unknown_pretrained_tag_lists_what_ships():
    with pytest.raises(ResnetlabError, match="neither a file nor a tag"):
        resnetlab.create_model("resnet20", pretrained="imagenet-21k")


def test_metadata_is_json_in_the_safetensors_header(tmp_path):
    resnetlab.save_weights(resnetlab.create_model("plain20"), tmp_path / "p.safetensors", {"x": 1})
    meta = read_metadata(tmp_path / "p.safetensors")
    assert json.loads(json.dumps(meta)) == meta and meta["x"] == 1 and meta["name"] == "plain20"


# --------------------------------------------------------------------------------------------
# backbones: the same weight files as the full models


def stage_outputs(model, x):
    """The outputs of the modules `feature_info` names, taken from the full model by hooks."""
    got = {}
    hooks = [
        model.get_submodule(f["module"]).register_forward_hook(
            lambda _m, _i, out, name=f["module"]: got.setdefault(name, out.clone())
        )
        for f in model.feature_info
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [got[f["module"]] for f in model.feature_info]


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_torchvision_state_dict_loads_into_resnet50_backbone_with_the_full_models_maps(
    output_stride, tmp_path
):
    state = random_state(torchvision_layout("resnet50"))
    torch.save(state, tmp_path / "resnet50.pth")
    full = resnetlab.create_model(
        "resnet50", output_stride=output_stride, pretrained=tmp_path / "resnet50.pth"
    ).eval()
    backbone = resnetlab.create_model(
        "resnet50", features_only=True, out_indices=(0, 1, 2, 3, 4),
        output_stride=output_stride, pretrained=tmp_path / "resnet50.pth",
    ).eval()  # fmt: skip
    assert set(backbone.state_dict()) == {k for k in state if not k.startswith("fc.")}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = backbone(x)
    want = stage_outputs(full, x)
    assert [m.shape for m in maps] == [w.shape for w in want]
    assert all(torch.equal(m, w) for m, w in zip(maps, want))
    # torch's own load_state_dict takes the full model's state dict as well
    fresh = resnetlab.create_model("resnet50", features_only=True, output_stride=output_stride)
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert all(torch.equal(m, w) for m, w in zip(fresh.eval()(x)[-4:], maps[1:]))


@pytest.mark.parametrize(
    "name, options", [("resnet20", {}), ("preact_resnet110", {"layers": [1, 1, 1]})]
)
def test_project_safetensors_load_into_the_backbone_of_the_same_model(name, options, tmp_path):
    torch.manual_seed(0)
    full = resnetlab.create_model(name, num_classes=3, in_chans=1, **options)
    full.train()(torch.randn(4, 1, 16, 16))  # running statistics away from their init
    resnetlab.save_weights(full, tmp_path / "w.safetensors")
    backbone = resnetlab.create_model(
        name, features_only=True, pretrained=tmp_path / "w.safetensors"
    )
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        maps = backbone.eval()(x)
    assert all(torch.equal(m, w) for m, w in zip(maps, stage_outputs(full.eval(), x)[1:]))


def test_shipped_weights_load_into_a_dilated_backbone():
    full = resnetlab.create_model("resnet20", pretrained="fashion-mnist").eval()
    backbone = resnetlab.create_model(
        "resnet20", pretrained="fashion-mnist", features_only=True, output_stride=2
    ).eval()
    assert backbone.strides == [1, 2, 2]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        maps = backbone(x)
        want = stage_outputs(full, x)[1:3]
    assert all(torch.equal(m, w) for m, w in zip(maps[:2], want))
    assert maps[2].shape == (2, 64, 14, 14)  # the last stage keeps stride 2, dilated


def test_backbone_holds_only_the_stages_it_returns_and_stays_strict_about_them(tmp_path):
    state = random_state(torchvision_layout("resnet18"))
    backbone = resnetlab.create_model("resnet18", features_only=True, out_indices=(1, 2))
    assert {k.split(".")[0] for k in backbone.state_dict()} == {"conv1", "bn1", "layer1", "layer2"}
    torch.save(state, tmp_path / "full.pth")
    resnetlab.load_weights(backbone, tmp_path / "full.pth")
    torch.testing.assert_close(backbone.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(ResnetlabError, match=r"missing 1 key\(s\): layer1\.0\.conv1\.weight"):
        resnetlab.load_weights(backbone, tmp_path / "short.pth")


def test_a_backbones_file_rebuilds_the_backbone_with_its_feature_maps(tmp_path):
    torch.manual_seed(0)
    backbone = resnetlab.create_model("resnet20", features_only=True, out_indices=(1, 3)).eval()
    resnetlab.save_weights(backbone, tmp_path / "b.safetensors")
    model, meta = resnetlab.load_model(tmp_path / "b.safetensors")
    assert meta["features_only"] is True and meta["out_indices"] == [1, 3]
    assert model.out_indices == (1, 3)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), backbone(x)))
    again = resnetlab.create_model("resnet20", pretrained=tmp_path / "b.safetensors")
    assert again.out_indices == (1, 3)


@pytest.mark.parametrize(
    "out_indices, message",
    [([9], r"out_indices \[9\] out of range"), ([], "out_indices is \\[\\]"), ("1", "out_indices")],
)
def test_a_backbones_file_with_bad_out_indices_fails_in_one_line(out_indices, message, tmp_path):
    from safetensors.torch import save_file

    backbone = resnetlab.create_model("resnet20", features_only=True)
    meta = {**backbone.resnetlab_config, "out_indices": out_indices}
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, tmp_path / "b.safetensors", metadata={"resnetlab": json.dumps(meta)})
    with pytest.raises(ResnetlabError, match=message):
        resnetlab.load_model(tmp_path / "b.safetensors")


def test_a_weights_file_is_read_once_per_load(tmp_path, monkeypatch):
    import resnetlab.models.weights as weights

    model = resnetlab.create_model("resnet20", num_classes=3)
    resnetlab.save_weights(model, tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    opened = []
    safe_open, torch_load = weights.safe_open, torch.load
    monkeypatch.setattr(
        weights, "safe_open", lambda p, **kw: opened.append(p) or safe_open(p, **kw)
    )
    monkeypatch.setattr(torch, "load", lambda p, **kw: opened.append(p) or torch_load(p, **kw))
    resnetlab.load_model(tmp_path / "w.safetensors")
    assert len(opened) == 1
    resnetlab.create_model("resnet20", pretrained=tmp_path / "w.safetensors")
    resnetlab.create_model("resnet20", pretrained=tmp_path / "w.pth")
    resnetlab.load_weights(model, tmp_path / "w.safetensors")
    assert len(opened) == 4
