"""The fast in-memory loader: shapes, normalisation, augmentations, determinism, exact resume."""

import pytest
import torch

from resnetlab.data.augment import crop_flip, random_erase
from resnetlab.data.dataset import ImageDataset
from resnetlab.data.loader import BatchLoader
from resnetlab.data.normalise import compute_mean_std


def make_dataset(n=100, c=1, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    return ImageDataset(images, labels, [str(i) for i in range(10)])


def test_mean_std_match_float_computation():
    ds = make_dataset(c=3)
    mean, std = compute_mean_std(ds.images)
    x = ds.images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-6)


def test_eval_batches_are_normalised_in_order_and_channels_last():
    ds = make_dataset(n=10, c=3)
    mean, std = compute_mean_std(ds.images)
    loader = BatchLoader(ds, 4, train=False, mean=mean, std=std)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]  # eval keeps the tail
    x = torch.cat([b[0] for b in batches])
    expected = (ds.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(torch.cat([b[1] for b in batches]), ds.labels)


def test_train_epoch_is_a_permutation_and_drops_the_tail():
    ds = make_dataset(n=103)
    loader = BatchLoader(ds, 10, train=True, mean=(0.5,), std=(0.25,), seed=1)
    assert len(loader) == 10
    seen = torch.cat([y for _, y in loader])
    assert len(seen) == 100 and len(set(seen.tolist())) == 10


def test_crop_without_pad_and_flip_is_identity():
    x = torch.randint(0, 256, (5, 2, 6, 7), dtype=torch.uint8)
    assert torch.equal(crop_flip(x, 0, False, torch.Generator().manual_seed(0)), x)


def test_crop_is_a_translation_of_the_zero_padded_image():
    x = torch.randint(1, 256, (64, 1, 6, 6), dtype=torch.uint8)
    out = crop_flip(x, 2, False, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_mirrors_about_half_the_samples():
    x = torch.randint(0, 256, (400, 1, 4, 5), dtype=torch.uint8)
    out = crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    same = [torch.equal(out[i], x[i]) for i in range(len(x))]
    mirrored = [torch.equal(out[i], x[i].flip(2)) for i in range(len(x))]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 150 < sum(mirrored) < 250


def test_erase_zeroes_one_box_per_chosen_sample():
    x = torch.ones(200, 1, 16, 16)
    out = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).any(1)
    assert 60 < erased.sum() < 140
    for i in torch.nonzero(erased).flatten()[:20]:
        ys, xs = torch.nonzero(out[i, 0] == 0, as_tuple=True)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert box == len(ys)  # the zeros fill one rectangle


def test_same_seed_same_batches_other_seed_other_batches():
    ds = make_dataset()
    kw = dict(train=True, mean=(0.5,), std=(0.25,), pad=2, flip=True, erase=0.5)
    a = [x for x, _ in BatchLoader(ds, 16, seed=3, **kw)]
    b = [x for x, _ in BatchLoader(ds, 16, seed=3, **kw)]
    c = [x for x, _ in BatchLoader(ds, 16, seed=4, **kw)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_resume_mid_epoch_gives_identical_batches():
    ds = make_dataset()
    kw = dict(train=True, mean=(0.5,), std=(0.25,), pad=2, flip=True, erase=0.5, seed=7)
    loader = BatchLoader(ds, 8, **kw)
    loader.set_epoch(2)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batch": 5}
    rest = [x for x, _ in it]
    resumed = BatchLoader(ds, 8, **kw)
    resumed.load_state_dict(state)
    again = [x for x, _ in resumed]
    assert len(rest) == len(again) == len(loader) - 5
    assert all(torch.equal(p, q) for p, q in zip(rest, again))
    assert resumed.state_dict() == {"epoch": 3, "batch": 0}


def test_ranks_split_the_epoch_without_overlap():
    ds = make_dataset(n=101)
    kw = dict(train=True, mean=(0.5,), std=(0.25,), seed=0, world_size=2)
    r0 = BatchLoader(ds, 10, rank=0, **kw)
    r1 = BatchLoader(ds, 10, rank=1, **kw)
    assert len(r0) == len(r1) == 5
    ids0 = {int(i) for i in r0.plan(0).order}
    ids1 = {int(i) for i in r1.plan(0).order}
    assert not ids0 & ids1 and len(ids0) == len(ids1) == 50


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(mean=(0.5, 0.5)), "channels"),
        (dict(rank=2, world_size=2), "rank"),
    ],
)
def test_bad_loader_arguments_fail_clearly(kwargs, message):
    args = dict(batch_size=4, train=True, mean=(0.5,), std=(0.25,))
    args.update(kwargs)
    bs = args.pop("batch_size")
    if "mean" in kwargs:
        args["std"] = kwargs["mean"]
    with pytest.raises(ValueError, match=message):
        BatchLoader(make_dataset(), bs, **args)


MEAN, STD = (0.5,), (0.25,)


def _planned_batches(ds, loader, epoch=0):
    """The epoch's batches built image by image from the loader's plan with plain slicing: pad,
    crop at (dy, dx), mirror, normalise, zero the erased box."""
    plan = loader.plan(epoch)
    order, dy, dx, mirror, boxes = (
        t.cpu() for t in (plan.order, plan.dy, plan.dx, plan.mirror, plan.boxes)
    )
    p, (h, w) = loader.pad, ds.images.shape[2:]
    mean, std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)
    out = []
    for b in range(len(loader)):
        xs = []
        for j in range(b * loader.batch_size, (b + 1) * loader.batch_size):
            img = torch.nn.functional.pad(ds.images[order[j]], (p, p, p, p))
            img = img[:, dy[j] : dy[j] + h, dx[j] : dx[j] + w]
            img = img.flip(-1) if mirror[j] else img
            img = (img.double() / 255 - mean) / std
            y0, x0, eh, ew = boxes[j].tolist()
            img[:, y0 : y0 + eh, x0 : x0 + ew] = 0
            xs.append(img.float())
        s = slice(b * loader.batch_size, (b + 1) * loader.batch_size)
        out.append((torch.stack(xs), ds.labels[order[s]]))
    return out


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason="needs CUDA"))],
)  # fmt: skip
def test_the_host_and_the_device_resident_loader_train_on_the_same_images(device):
    # both against the plan applied image by image: on a CPU the two loaders share one code path,
    # so comparing them with each other alone would show nothing
    ds = make_dataset(n=64)
    kw = dict(train=True, mean=MEAN, std=STD, pad=2, flip=True, erase=0.5, seed=5)
    host_loader = BatchLoader(ds, 16, **kw)
    planned = _planned_batches(ds, host_loader)
    mirror, boxes = host_loader.plan(0).mirror, host_loader.plan(0).boxes
    assert 0 < int(mirror.sum()) < len(mirror) and (boxes[:, 2] > 0).any()  # both kinds drawn
    host = list(host_loader)
    resident = list(BatchLoader(ds, 16, device=device, **kw))
    assert len(host) == len(resident) == len(planned) == 4
    for (x, y), (xr, yr), (xp, yp) in zip(host, resident, planned):
        assert x.device.type == "cpu" and xr.device.type == device
        torch.testing.assert_close(x, xp, rtol=0, atol=1e-5)
        assert torch.equal(y, yp)
        torch.testing.assert_close(xr.cpu(), x, rtol=1e-6, atol=1e-6)
        assert torch.equal(yr.cpu(), y)
