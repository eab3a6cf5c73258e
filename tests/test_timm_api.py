"""A timm user's first calls, each run: create_model's pretrained forms and load-time adaptation,
list_models patterns, pretrained_cfg and the data transform, FeatureInfo, forward_head,
forward_intermediates, reset_classifier round trips, and the CIFAR depths' own names."""

import logging

import pytest
import torch
from PIL import Image

import resnetlab
from resnetlab.data import create_transform, resolve_data_config
from resnetlab.data.images import image_to_tensor
from resnetlab.errors import ResnetlabError
from resnetlab.models import FeatureInfo, adapt_input_conv, list_models, list_pretrained
from resnetlab.models.weights import read_weights

SHIPPED = "resnet20.fashion-mnist"
FASHION_SIZE = [1, 28, 28]


def grey_batch(n=4, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def shipped():
    """The shipped Fashion-MNIST resnet20 (eval mode) and its file's tensors and metadata."""
    state, meta = read_weights(resnetlab.models.weights_file(SHIPPED))
    return resnetlab.create_model("resnet20", pretrained="fashion-mnist").eval(), state, meta


def one_line(call, match):
    with pytest.raises(ResnetlabError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# create_model(name, pretrained=...)


def test_every_pretrained_form_loads_the_same_weights(shipped, tmp_path):
    model, _, _ = shipped
    x = grey_batch()
    want = model(x)
    forms = [
        dict(name="resnet20", pretrained=True),  # the net's default tag
        dict(name="resnet20", pretrained="fashion-mnist"),  # a tag
        dict(name="resnet20", pretrained=SHIPPED),  # name.tag
        dict(name=SHIPPED, pretrained=True),  # the tag in the name, as timm
        dict(name="resnet20", pretrained=resnetlab.models.weights_file(SHIPPED)),  # a path
    ]
    for form in forms:
        with torch.no_grad():
            assert torch.equal(resnetlab.create_model(**form).eval()(x), want), form
    loaded, meta = resnetlab.load_model(SHIPPED)  # shipped weights by name wherever a file goes
    assert torch.equal(loaded(x), want) and meta["name"] == "resnet20"
    assert loaded.pretrained_cfg["tag"] == "fashion-mnist"


def test_a_tag_is_a_tag_even_beside_a_folder_of_that_name(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fashion-mnist").mkdir()  # the data folder, say
    model = resnetlab.create_model("resnet20", pretrained="fashion-mnist")
    assert torch.equal(model.conv1.weight, shipped[1]["conv1.weight"])
    one_line(
        lambda: resnetlab.load_model("resnet20.imagenet"),
        r"not found: resnet20\.imagenet \(nor shipped weights: resnet20\.fashion-mnist\)",
    )


@pytest.mark.parametrize("pretrained", [False, None])
def test_pretrained_false_never_errors_even_where_no_weights_ship(pretrained):
    model = resnetlab.create_model("resnet56", pretrained=pretrained)
    assert model.fc.out_features == 10 and not hasattr(model, "resnetlab_metadata")


def test_a_tag_in_the_name_without_pretrained_gives_its_config_and_fresh_weights(shipped):
    _, state, meta = shipped
    model = resnetlab.create_model(SHIPPED)  # timm: the tag picks the cfg; pretrained=True loads
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    assert model.pretrained_cfg["tag"] == "fashion-mnist"
    assert model.pretrained_cfg["classes"] == meta["classes"]
    assert not torch.equal(model.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="resnet56", pretrained=True),
         r"pretrained=True: no weights ship for resnet56; shipped: resnet20\.fashion-mnist"),
        (dict(name="resnet20", pretrained="imagenet"),
         "'imagenet' is neither a file nor a tag \\(shipped tags for resnet20: fashion-mnist\\)"),
        (dict(name="resnet56", pretrained=SHIPPED), "holds weights of resnet20, not resnet56"),
        (dict(name="resnet20.imagenet"), "'resnet20.imagenet' names no shipped weights"),
        (dict(name="resnet20", pretrained=3), "expected True/False, a shipped tag"),
        (dict(name="resnet20", pretrained="nowhere/w.safetensors"), "weights file not found"),
    ],
)  # fmt: skip
def test_bad_pretrained_requests_fail_in_one_line_naming_what_ships(kwargs, message):
    one_line(lambda: resnetlab.create_model(**kwargs), message)


# --------------------------------------------------------------------------------------------
# adaptation at load time


def test_another_num_classes_gets_a_new_head_and_the_rest_loads_strictly(shipped, caplog):
    _, state, meta = shipped
    with caplog.at_level(logging.INFO, logger="resnetlab.models"):
        model = resnetlab.create_model("resnet20", pretrained=True, num_classes=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "resnetlab.models"]
    assert lines == [
        "resnet20.fashion-mnist: new head for 5 classes (the weights have 10); "
        "the rest loaded strictly"
    ]
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert model.fc.weight.shape == (5, 64)
    md, cfg = model.resnetlab_metadata, model.pretrained_cfg
    assert md["num_classes"] == 5 and "classes" not in md and "test_top1_err" not in md
    assert md["input_size"] == FASHION_SIZE and md["mean"] == meta["mean"]
    assert md["pretrained_from"] == SHIPPED
    assert cfg["num_classes"] == 5 and cfg["classes"] is None and cfg["input_size"] == (1, 28, 28)


def test_num_classes_zero_gives_pooled_features_and_no_head(shipped):
    full, _, _ = shipped
    model = resnetlab.create_model("resnet20", pretrained=True, num_classes=0).eval()
    x = grey_batch()
    with torch.no_grad():
        feats = model(x)
        assert feats.shape == (4, 64)
        assert torch.equal(feats, full.forward_head(full.forward_features(x), pre_logits=True))
    assert not any(k.startswith("fc.") for k in model.state_dict())
    assert isinstance(model.get_classifier(), torch.nn.Identity)


def test_in_chans_3_adapts_the_grey_stem_as_timms_adapt_input_conv(shipped):
    full, state, meta = shipped
    rgb = resnetlab.create_model("resnet20", pretrained="fashion-mnist", in_chans=3).eval()
    assert torch.equal(rgb.conv1.weight, state["conv1.weight"].repeat(1, 3, 1, 1) * (1 / 3))
    x = grey_batch()
    with torch.no_grad():  # a grey image as RGB is answered as the original answers the grey one
        torch.testing.assert_close(rgb(x.repeat(1, 3, 1, 1)), full(x), atol=1e-5, rtol=0)
    md, cfg = rgb.resnetlab_metadata, rgb.pretrained_cfg
    assert md["in_chans"] == 3 and md["input_size"] == [3, 28, 28]
    assert md["mean"] == meta["mean"] * 3 and md["std"] == meta["std"] * 3
    assert md["classes"] == meta["classes"]  # the head is the file's: its names still hold
    assert cfg["input_size"] == (3, 28, 28) and cfg["mean"] == tuple(meta["mean"] * 3)


def test_an_rgb_file_loads_into_a_grey_model_by_summing_the_stem(tmp_path):
    torch.manual_seed(0)
    rgb = resnetlab.create_model("resnet20", num_classes=3)
    resnetlab.save_weights(rgb, tmp_path / "rgb.safetensors")
    grey = resnetlab.create_model("resnet20", pretrained=tmp_path / "rgb.safetensors", in_chans=1)
    assert torch.equal(grey.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert grey.resnetlab_metadata["input_size"] == [1, 32, 32]  # the default cfg's, adapted


def test_adapt_input_conv_sums_for_one_channel_and_repeats_and_rescales_for_more():
    w = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)
    assert adapt_input_conv(1, w).flatten().tolist() == [3.0, 12.0]
    five = adapt_input_conv(5, w)  # channels 0 1 2 0 1, scaled by 3/5
    assert torch.equal(five, w[:, [0, 1, 2, 0, 1]] * (3 / 5))
    assert adapt_input_conv(3, w) is w
    assert adapt_input_conv(3, w.half()).dtype == torch.float16


def test_global_pool_options_pool_as_timm():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    avg = resnetlab.create_model("resnet20", num_classes=0).eval()
    with torch.no_grad():
        fmap = avg.forward_features(x)
        avg_, max_ = fmap.mean((2, 3)), fmap.amax((2, 3))
        for pool, want in [
            ("avg", avg_),
            ("max", max_),
            ("avgmax", 0.5 * (avg_ + max_)),
            ("", fmap),
        ]:
            avg.reset_classifier(0, global_pool=pool)
            torch.testing.assert_close(avg(x), want, atol=1e-6, rtol=0)
    one_line(
        lambda: resnetlab.create_model("resnet20", global_pool="", num_classes=3),
        r"global_pool '' \(no pooling\) leaves a feature map that an fc of 3 classes cannot take",
    )
    one_line(lambda: resnetlab.create_model("resnet20", global_pool="mean"), "'mean' is not known")
    one_line(lambda: resnetlab.create_model("residual_mlp", global_pool="max"), "does not apply")


# --------------------------------------------------------------------------------------------
# list_models, list_pretrained


def test_list_models_takes_fnmatch_patterns_and_lists_shipped_weights():
    resnets = list_models("resnet*")
    assert {"resnet8", "resnet14", "resnet20", "resnet50", "resnet1202"} <= set(resnets)
    assert not any(n.startswith(("plain", "preact")) for n in resnets)
    assert resnets.index("resnet8") < resnets.index("resnet14") < resnets.index("resnet110")
    assert "resnet8" not in list_models()  # the standard table; a pattern searches every depth
    assert list_models(["plain1?", "*mlp"]) == ["plain14", "plain18", "plain_mlp", "residual_mlp"]
    assert list_models("resnet*", exclude_filters="resnet1*")[:3] == [
        "resnet8",
        "resnet20",
        "resnet26",
    ]
    assert list_models(pretrained=True) == [SHIPPED]
    assert list_models("resnet2*", pretrained=True, include_tags=False) == ["resnet20"]
    assert list_pretrained() == list_pretrained("*fashion*") == [SHIPPED]
    assert list_models(family="wide") == ["wide_resnet16_8", "wide_resnet28_10",
                                          "wide_resnet40_4", "wide_resnet50_2"]  # fmt: skip
    assert list_models("vgg*") == []


# --------------------------------------------------------------------------------------------
# pretrained_cfg, resolve_data_config, create_transform


@pytest.mark.parametrize(
    "name, options, size, mean, crop",
    [
        ("resnet20", {}, (3, 32, 32), (0.4914, 0.4822, 0.4465), 1.0),
        ("resnet50", {}, (3, 224, 224), (0.485, 0.456, 0.406), 0.875),
        ("resnet18", {"stem": "small"}, (3, 32, 32), (0.4914, 0.4822, 0.4465), 1.0),
        ("residual_mlp", {}, (784,), None, 1.0),
    ],
)
def test_a_model_without_weights_gets_its_layouts_default_cfg(name, options, size, mean, crop):
    cfg = resnetlab.create_model(name, **options).pretrained_cfg
    assert cfg["input_size"] == size and cfg["mean"] == mean and cfg["crop_pct"] == crop
    assert cfg["interpolation"] == "bilinear" and cfg["tag"] is None and cfg["classes"] is None
    assert set(cfg) >= {"input_size", "mean", "std", "interpolation", "crop_pct", "num_classes",
                        "classes", "tag"}  # fmt: skip


def test_resolve_data_config_reads_the_model_and_takes_overrides(shipped):
    model, _, meta = shipped
    want = {"input_size": (1, 28, 28), "interpolation": "bilinear", "mean": tuple(meta["mean"]),
            "std": tuple(meta["std"]), "crop_pct": 1.0, "crop_mode": "center"}  # fmt: skip
    assert resolve_data_config(model) == want
    assert resolve_data_config({}, model=model) == want  # timm's own idiom
    assert resolve_data_config(model.pretrained_cfg) == want
    bigger = resolve_data_config(model, input_size=64, crop_pct=0.5)
    assert bigger["input_size"] == (1, 64, 64) and bigger["crop_pct"] == 0.5
    grey = resolve_data_config(resnetlab.create_model("resnet20", in_chans=1))
    assert grey["mean"] == (pytest.approx((0.4914 + 0.4822 + 0.4465) / 3),)
    one_line(lambda: resolve_data_config(model, interpolation="bicubic"), "bilinear filter only")
    one_line(lambda: resolve_data_config(model, size=3), "unknown data config key")
    one_line(lambda: resolve_data_config(torch.nn.Linear(2, 2)), "without pretrained_cfg")


def test_create_transform_is_predicts_preprocessing(shipped, tmp_path):
    from resnetlab.infer.preprocess import Preprocess

    model, _, meta = shipped
    transform = create_transform(resolve_data_config(model))
    rng = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (45, 60, 3), generator=rng, dtype=torch.uint8).numpy()
    img = Image.fromarray(pixels, "RGB")
    x = transform(img)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    reference = Preprocess.from_metadata(meta)(image_to_tensor(img.convert("L")))
    assert torch.equal(x, reference)
    img.save(tmp_path / "a.png")
    assert torch.equal(transform(tmp_path / "a.png"), x)
    with torch.no_grad():  # straight into the model
        assert model(x[None]).shape == (1, 10)
    big = create_transform(**resolve_data_config({}, model=resnetlab.create_model("resnet50")))
    assert big.resize_size == (256, 256) and big(img).shape == (3, 224, 224)


def test_create_transform_for_training_augments_reproducibly():
    cfg = resolve_data_config(resnetlab.create_model("resnet20"))
    img = Image.fromarray(
        torch.randint(0, 256, (40, 50, 3), generator=torch.Generator().manual_seed(1),
                      dtype=torch.uint8).numpy()
    )  # fmt: skip
    a, b = create_transform(cfg, is_training=True), create_transform(cfg, is_training=True)
    first = a(img)
    assert first.shape == (3, 32, 32) and torch.equal(first, b(img))  # same seed, same draws
    assert not torch.equal(a(img), first)  # the next call draws anew
    one_line(lambda: create_transform(resolve_data_config(resnetlab.create_model("residual_mlp"))),
             "images give 1 \\(grey\\) or 3 \\(RGB\\) channels")  # fmt: skip


# --------------------------------------------------------------------------------------------
# feature_info, forward_head, forward_intermediates, reset_classifier, get_classifier


def test_feature_info_is_timms_object_and_still_the_list_of_dicts():
    model = resnetlab.create_model("resnet50")
    info = model.feature_info
    assert isinstance(info, FeatureInfo)
    assert info.channels() == [64, 256, 512, 1024, 2048]
    assert info.reduction() == [2, 4, 8, 16, 32]
    assert info.module_name() == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert info.channels(2) == 512 and info.reduction([1, 4]) == [4, 32]
    assert [f["module"] for f in info] == info.module_name() and info[-1]["num_chs"] == 2048
    backbone = resnetlab.create_model("resnet50", features_only=True, out_indices=(-2, -1))
    assert backbone.out_indices == (3, 4) and backbone.feature_info.channels() == [1024, 2048]
    assert backbone.channels == [1024, 2048] and backbone.strides == [16, 32]
    last_two = resnetlab.create_model("resnet50", features_only=True, out_indices=2)
    assert last_two.out_indices == (3, 4)  # timm: an int n means the last n maps
    assert resnetlab.create_model("resnet20", features_only=True, out_indices=[0, -1]).strides == [
        1,
        4,
    ]
    one_line(
        lambda: resnetlab.create_model("resnet20", features_only=True, out_indices=(4,)),
        r"out_indices \[4\] out of range; this model has features 0\.\.3 \(or -4\.\.-1\)",
    )


def test_forward_head_pre_logits_stops_before_the_fc(shipped):
    model, _, _ = shipped
    x = grey_batch()
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(pooled, feats.mean((2, 3)), atol=1e-6, rtol=0)
        assert torch.equal(model.forward_head(feats), model(x))
        assert torch.equal(model.get_classifier()(pooled), model(x))


def test_forward_intermediates_returns_timms_pair_and_picks_maps(shipped):
    model, _, _ = shipped
    x = grey_batch()
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [m.shape[1:] for m in maps] == [(16, 28, 28), (16, 28, 28), (32, 14, 14), (64, 7, 7)]
        picked = model.forward_intermediates(x, indices=[-1, 1], intermediates_only=True)
        assert (
            len(picked) == 2 and torch.equal(picked[0], maps[1]) and torch.equal(picked[1], maps[3])
        )
        last = model.forward_intermediates(x, indices=1, intermediates_only=True)
        assert len(last) == 1 and torch.equal(last[0], maps[3])
        early, upto = model.forward_intermediates(x, indices=[2], stop_early=True)
        assert torch.equal(early, maps[2]) and torch.equal(upto[0], maps[2])
    one_line(lambda: model.forward_intermediates(x, indices=[9]), r"indices \[9\] out of range")


def test_forward_intermediates_of_a_preact_net_norms_the_last_map_when_asked():
    torch.manual_seed(0)
    model = resnetlab.create_model("preact_resnet110", layers=[1, 1, 1]).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        assert torch.equal(normed[0], final) and not torch.equal(maps[-1], final)


def test_the_mlp_has_the_same_habits():
    torch.manual_seed(0)
    mlp = resnetlab.create_model("residual_mlp", depth=2, width=32, num_classes=3).eval()
    assert mlp.feature_info.module_name() == ["stem", "blocks.0", "blocks.1"]
    assert mlp.feature_info.channels() == [32, 32, 32]
    x = torch.randn(4, 784)
    with torch.no_grad():
        final, outs = mlp.forward_intermediates(x)
        assert torch.equal(final, mlp.forward_features(x)) and torch.equal(outs[-1], final)
        assert torch.equal(mlp.forward_head(final, pre_logits=True), final)
        mlp.reset_classifier(5)
        assert mlp(x).shape == (4, 5) and mlp.pretrained_cfg["num_classes"] == 5


def test_reset_classifier_then_save_weights_writes_a_file_load_model_reads(shipped, tmp_path):
    model = resnetlab.create_model("resnet20", pretrained="fashion-mnist").eval()
    _, _, meta = shipped
    model.reset_classifier(4)
    assert model.get_classifier().out_features == 4 and model.pretrained_cfg["classes"] is None
    assert model.resnetlab_config["num_classes"] == 4
    resnetlab.save_weights(model, tmp_path / "r.safetensors")
    again, saved = resnetlab.load_model(tmp_path / "r.safetensors")
    assert saved["num_classes"] == 4 and "classes" not in saved
    assert saved["input_size"] == FASHION_SIZE and saved["mean"] == meta["mean"]
    assert saved["std"] == meta["std"] and saved["num_features"] == 64
    x = grey_batch()
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert again.pretrained_cfg["input_size"] == (1, 28, 28)
    # class names follow the head: the right count is kept, another is refused in one line
    resnetlab.save_weights(model, tmp_path / "n.safetensors", {"classes": list("abcd")})
    assert resnetlab.load_model(tmp_path / "n.safetensors")[0].pretrained_cfg["classes"] == list(
        "abcd"
    )
    one_line(lambda: resnetlab.save_weights(model, tmp_path / "x.safetensors", {"classes": ["a"]}),
             "classes has 1 names but the model has 4 outputs")  # fmt: skip
    one_line(lambda: resnetlab.save_weights(model, tmp_path / "x.safetensors", {"num_classes": 10}),
             "metadata num_classes is 10 but the model's is 4")  # fmt: skip
    model.reset_classifier(0, global_pool="max")
    resnetlab.save_weights(model, tmp_path / "f.safetensors")
    feats, saved = resnetlab.load_model(tmp_path / "f.safetensors")
    assert saved["global_pool"] == "max" and saved["num_classes"] == 0
    with torch.no_grad():
        assert torch.equal(feats(x), model(x)) and feats(x).shape == (4, 64)


# --------------------------------------------------------------------------------------------
# every CIFAR depth 6n+2 has a name of its own


@pytest.mark.parametrize(
    "name, depth, blocks",
    [("resnet8", 8, 1), ("plain8", 8, 1), ("resnet14", 14, 2), ("plain14", 14, 2),
     ("resnet26", 26, 4), ("plain1202", 1202, 200)],
)  # fmt: skip
def test_cifar_depths_have_their_own_names(name, depth, blocks):
    entry = resnetlab.models.get_entry(name)
    assert entry.depth == depth and entry.spec.layers == (blocks,) * 3
    family = name.rstrip("0123456789")
    assert entry.family == family and entry.spec.plain == (family == "plain")
    if blocks <= 4:
        model = resnetlab.create_model(name)
        assert model.resnetlab_config["depth"] == entry.depth
        assert len(model.layer1) == blocks


def test_a_net_built_shallower_says_its_real_depth_and_bad_depths_are_refused():
    assert resnetlab.create_model("resnet20", layers=[1, 1, 1]).resnetlab_config["depth"] == 8
    assert resnetlab.create_model("residual_mlp", depth=2).resnetlab_config["depth"] == 6
    one_line(lambda: resnetlab.create_model("resnet27"), r"depth 6n\+2, 8, 14, 20, \.\.\., 1202")
    one_line(lambda: resnetlab.create_model("plain1208"), "unknown model 'plain1208'")
    assert resnetlab.models.get_entry("resnet50").layout == "imagenet"  # torchvision's name wins


def test_models_command_lists_every_depth_with_exact_counts(capsys):
    import json

    from resnetlab.cli import main
    from resnetlab.commands.models import _counts, net_counts

    assert main(["models", "resnet1?", "plain8", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"resnet14", "resnet18", "plain8"}
    assert rows["resnet14"]["depth"] == 14 and rows["resnet14"]["params"] == 172_506
    for name in ("resnet56", "preact_resnet164"):  # n x blocks counted from n = 1 and 2: exact
        entry = resnetlab.models.get_entry(name)
        assert net_counts(entry) == _counts(entry.spec, entry.num_classes, entry.input_size)
    assert main(["models", "--pretrained"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# done when: the shipped grey weights start an RGB 5-class model, which trains, saves, reloads


def test_shipped_grey_weights_start_an_rgb_five_class_model_that_round_trips(tmp_path):
    torch.manual_seed(0)
    model = resnetlab.create_model(
        "resnet20", pretrained="fashion-mnist", in_chans=3, num_classes=5
    )
    assert model.conv1.in_channels == 3 and model.fc.out_features == 5
    images = torch.rand(16, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(16) % 5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(3):  # a few steps stand in for resnetlab.fit's short epoch
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    classes = ["boot", "coat", "bag", "shirt", "dress"]
    resnetlab.save_weights(model, tmp_path / "rgb5.safetensors", {"classes": classes})
    again, meta = resnetlab.load_model(tmp_path / "rgb5.safetensors")
    assert meta["in_chans"] == 3 and meta["num_classes"] == 5 and meta["classes"] == classes
    assert meta["input_size"] == [3, 28, 28] and len(meta["mean"]) == len(meta["std"]) == 3
    transform = create_transform(resolve_data_config(again))
    photo = Image.fromarray((images[0] * 255).byte().permute(1, 2, 0).numpy(), "RGB")
    with torch.no_grad():
        assert torch.equal(again(images), model(images))
        x = transform(photo)[None]
        assert torch.equal(again(x).argmax(1), model(x).argmax(1))
