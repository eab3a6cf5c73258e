"""Class-folder trees: formats, modes, sizes, splits, and every broken tree failing clearly."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers.data import make_tree, save, solid
from PIL import Image

from resnetlab.data.folders import is_class_tree, read_image_folder
from resnetlab.data.transform import resize_and_crop
from resnetlab.errors import ResnetlabError


def test_reads_classes_labels_and_exact_pixels(tmp_path):
    make_tree(tmp_path / "pets", per_class=5)
    s, skipped = read_image_folder(tmp_path / "pets", test_fraction=0.2, seed=0)
    assert skipped == []
    assert s.train.classes == ["cat", "dog"]
    assert len(s.train) == 8 and len(s.test) == 2
    assert sorted(s.test.labels.tolist()) == [0, 1]  # stratified: one of each class
    assert s.train.images.shape[1:] == (3, 4, 6) and s.train.images.dtype == torch.uint8
    every = torch.cat([s.train.images, s.test.images])
    firsts = every[:, 0, 0, 0].tolist()
    assert sorted(firsts) == sorted([40 * c + i for c in range(2) for i in range(5)])


def test_split_is_seeded(tmp_path):
    make_tree(tmp_path, per_class=10)
    a, _ = read_image_folder(tmp_path, seed=3)
    b, _ = read_image_folder(tmp_path, seed=3)
    c, _ = read_image_folder(tmp_path, seed=4)
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.test.images, c.test.images)


def test_all_grey_tree_reads_as_one_channel(tmp_path):
    make_tree(tmp_path, mode="L")
    s, _ = read_image_folder(tmp_path)
    assert s.train.images.shape[1] == 1
    s, _ = read_image_folder(tmp_path, mode="RGB")
    assert s.train.images.shape[1] == 3


def test_mixed_modes_jpeg_rgba_palette_sixteen_bit(tmp_path):
    save(tmp_path / "a" / "x.jpg", solid(100))
    save(tmp_path / "a" / "y.png", Image.new("RGBA", (6, 4), (0, 0, 0, 0)))
    save(tmp_path / "b" / "z.png", solid(7).convert("P"))
    save(tmp_path / "b" / "w.png", Image.fromarray(np.full((4, 6), 128 * 257, np.uint16)))
    s, _ = read_image_folder(tmp_path, test_fraction=0.5)
    every = torch.cat([s.train.images, s.test.images])
    assert every.shape == (4, 3, 4, 6)
    # each file is told by its pixels (the split shuffles them): one match per file
    rgb = np.asarray(Image.open(tmp_path / "b" / "z.png").convert("RGB"))
    palette = torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # as Pillow maps its palette
    expected = {
        "jpeg": lambda im: (im.int() - torch.tensor([100, 50, 155]).view(3, 1, 1)).abs().max() <= 3,
        "transparent -> white": lambda im: (im == 255).all(),
        "palette -> its colours": lambda im: torch.equal(im, palette),
        "16-bit 128*257 -> 128": lambda im: (im == 128).all(),
    }
    for what, matches in expected.items():
        assert sum(bool(matches(im)) for im in every) == 1, what


def test_sizes_differ_most_common_wins_and_size_argument(tmp_path):
    make_tree(tmp_path, size=(6, 4), per_class=3)
    save(tmp_path / "cat" / "big.png", solid(1, size=(12, 12)))
    s, _ = read_image_folder(tmp_path, test_fraction=0.25)
    assert s.train.image_shape == (3, 4, 6)
    s, _ = read_image_folder(tmp_path, size=8, test_fraction=0.25)
    assert s.train.image_shape == (3, 8, 8)


def test_fit_to_keeps_aspect_and_centre_crops():
    a = np.zeros((4, 8), np.uint8)
    a[:, 2:6] = 200  # bright centre columns
    out = np.asarray(resize_and_crop(Image.fromarray(a), (4, 4), (4, 4)))
    assert out.shape == (4, 4) and (out == 200).all()


def test_train_test_tree_keeps_its_split(tmp_path):
    make_tree(tmp_path / "train", per_class=3)
    make_tree(tmp_path / "test", per_class=2)
    s, _ = read_image_folder(tmp_path)
    assert (len(s.train), len(s.test), s.val) == (6, 4, None)
    make_tree(tmp_path / "val", per_class=1)
    s, _ = read_image_folder(tmp_path)
    assert (len(s.train), len(s.test), len(s.val)) == (6, 4, 2)


def test_val_serves_as_test_and_unknown_class_fails(tmp_path):
    make_tree(tmp_path / "train", per_class=2)
    make_tree(tmp_path / "val", classes=("cat", "dog"), per_class=1)
    s, _ = read_image_folder(tmp_path)
    assert len(s.test) == 2 and s.val is None
    make_tree(tmp_path / "val", classes=("cow",), per_class=1)
    with pytest.raises(ResnetlabError, match="class folder.*'cow' not in"):
        read_image_folder(tmp_path)


def test_text_file_posing_as_image_fails_naming_it(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "dog" / "notes.jpg").write_text("not an image at all")
    with pytest.raises(
        ResnetlabError, match=r"1 unreadable image file.*dog/notes\.jpg.*--skip-bad"
    ):
        read_image_folder(tmp_path)
    s, skipped = read_image_folder(tmp_path, skip_bad=True)
    assert len(skipped) == 1 and "notes.jpg" in skipped[0]
    assert len(s.train) + len(s.test) == 10


def test_truncated_image_fails_on_decode(tmp_path):
    make_tree(tmp_path)
    p = save(tmp_path / "cat" / "cut.png", Image.effect_noise((64, 64), 50).convert("RGB"))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ResnetlabError, match=r"cut\.png: not a readable image"):
        read_image_folder(tmp_path)
    _, skipped = read_image_folder(tmp_path, skip_bad=True)
    assert len(skipped) == 1


def test_many_bad_files_name_the_first_three(tmp_path):
    make_tree(tmp_path)
    for i in range(5):
        (tmp_path / "cat" / f"bad{i}.png").write_bytes(b"\x00" * 10)
    with pytest.raises(ResnetlabError, match=r"^5 unreadable .*\(and 2 more\)") as e:
        read_image_folder(tmp_path)
    assert len(re.findall(r"bad\d\.png", str(e.value))) == 3


def test_empty_folder_fails(tmp_path):
    with pytest.raises(ResnetlabError, match="no images found"):
        read_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("hi")
    with pytest.raises(ResnetlabError, match="no images found"):
        read_image_folder(tmp_path)
    assert not is_class_tree(tmp_path)


def test_one_class_folder_fails(tmp_path):
    make_tree(tmp_path, classes=("cat",))
    with pytest.raises(ResnetlabError, match=r"only one class folder \('cat'\)"):
        read_image_folder(tmp_path)


def test_class_folder_without_images_fails(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "emu").mkdir()
    with pytest.raises(ResnetlabError, match="class folder.*with no images: 'emu'"):
        read_image_folder(tmp_path)


def test_bad_arguments(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(ResnetlabError, match="unknown image mode"):
        read_image_folder(tmp_path, mode="CMYK")
    with pytest.raises(ResnetlabError, match="fraction must lie in"):
        read_image_folder(tmp_path, test_fraction=1.5)
    with pytest.raises(ResnetlabError, match="no such directory"):
        read_image_folder(tmp_path / "nope")


def test_test_tree_may_hold_fewer_classes(tmp_path):
    make_tree(tmp_path / "train", per_class=2)
    make_tree(tmp_path / "test", classes=("dog",), per_class=2)
    s, _ = read_image_folder(tmp_path)
    assert s.test.labels.tolist() == [1, 1] and s.test.classes == ["cat", "dog"]


def test_folders_and_predict_take_the_same_image_files(tmp_path):
    from resnetlab.infer.preprocess import find_images

    make_tree(tmp_path, per_class=2)
    save(tmp_path / "cat" / "x.gif", solid(7))
    save(tmp_path / "dog" / "y.tif", solid(9))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    s, _ = read_image_folder(tmp_path, test_fraction=0.25)
    assert len(s.train) + len(s.test) == 6  # the .gif and the .tif are images to both
    assert len(find_images([tmp_path])) == 6
