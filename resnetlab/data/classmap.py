"""Where data and weights meet, class names are matched by name, never silently by index.

A weights file carries the names of the classes its outputs stand for; a dataset carries the names
of its labels. Image folders sort their classes alphabetically (Ankle boot, Bag, Coat, ...), the
IDX files keep the dataset's own order (T-shirt/top, Trouser, ...): the same ten classes in another
order. Matched by index, the shipped Fashion-MNIST weights scored 41% on such a folder, every
per-class row under the wrong name; matched by name they score 94%.

`match_classes` decides, for evaluation (eval, quantize's comparison, lesion, gradients):
- the same names in the same order: nothing to say;
- the same set in another order, or a subset of the weights' classes: data label i is scored as
  the weights' output `index[i]`, and `note` says so in one line. A prediction of a class the data
  lacks counts as an error, as it should;
- data classes the weights do not know: refused in one line naming them, unless `ignore_names`
  forces an index match, which `note` states;
- weights or data without names (an npz without a `classes` array gives "0", "1", ...): index
  match, stated in `note`.

`match_head` decides the same for fine-tuning: which rows of the old classifier a new label set
keeps, and which classes get new rows.

Names compare exactly first; a name that does not is compared by its key (case-folded, every run of
characters other than letters and digits as one space), so a folder `T-shirt_top` is the class
`T-shirt/top`, which no folder can be called. A key shared by two classes of one side never matches.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ResnetlabError
from .dataset import ImageDataset

SHOWN = 5
IGNORE_HINT = "ignore_names (--ignore-class-names)"  # match_classes' own way, and eval's flag


@dataclass(frozen=True)
class ClassMatch:
    """How a dataset's labels map onto a model's outputs: data label i is output `index[i]`."""

    index: tuple[int, ...]
    how: str  # "same", "name" or "index"
    note: str  # one line for the user; "" when the classes are the same

    @property
    def identity(self) -> bool:
        """True when data label i is output i for every label."""
        return self.index == tuple(range(len(self.index)))

    def remap(self, data: ImageDataset, classes: Sequence[str]) -> ImageDataset:
        """`data` with its labels as the model's output indices and the model's class names."""
        if self.identity and list(data.classes) == list(classes):
            return data
        table = torch.tensor(self.index, dtype=torch.int64)
        return ImageDataset(data.images, table[data.labels], list(classes))


def name_key(name: str) -> str:
    """A class name as compared when the exact name does not match: case-folded, punctuation and
    spaces as one space ('T-shirt/top' and 'T-shirt_top' are both 't shirt top')."""
    return " ".join(re.split(r"[^0-9a-z]+", name.casefold())).strip()


def is_unnamed(classes: Sequence[str] | None) -> bool:
    """True when classes carry no names: none at all, or "0", "1", ... in order."""
    return not classes or list(classes) == [str(i) for i in range(len(classes))]


def class_names(meta: dict, num_classes: int) -> list[str]:
    """A weights file's class names (its metadata's), or "0", "1", ... when it names none."""
    names = meta.get("classes")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def _positions(classes: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    exact = {c: i for i, c in enumerate(classes)}
    keys = Counter(name_key(c) for c in classes)
    by_key = {name_key(c): i for i, c in enumerate(classes) if keys[name_key(c)] == 1}
    return exact, by_key


def find_names(wanted: Sequence[str], classes: Sequence[str]) -> list[int | None]:
    """For each name of `wanted`, its position in `classes` (exact, else by key), or None."""
    exact, by_key = _positions(classes)
    out: list[int | None] = []
    for name in wanted:
        out.append(exact[name] if name in exact else by_key.get(name_key(name)))
    return out


def _shown(names: Sequence[str]) -> str:
    text = ", ".join(repr(n) for n in names[:SHOWN])
    return text + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def match_classes(
    model_classes: Sequence[str] | None,
    num_outputs: int,
    data_classes: Sequence[str],
    *,
    weights: str = "the weights",
    data: str = "the data",
    ignore_names: bool = False,
    ignore_hint: str | None = IGNORE_HINT,
) -> ClassMatch:
    """How the labels of `data` (with `data_classes`) map onto a model's `num_outputs` outputs
    named `model_classes`: by name, or by index where names are missing or `ignore_names`.
    ignore_hint: how the caller's user asks for the index match, named when classes are unknown
    (None where the caller offers none: quantize, the studies)."""
    n_data = len(data_classes)
    model_classes = list(model_classes) if model_classes else None
    if model_classes is not None and len(model_classes) != num_outputs:
        model_classes = None  # names that do not describe the outputs name nothing
    unnamed = is_unnamed(model_classes) or is_unnamed(data_classes)
    if unnamed or ignore_names:
        if n_data > num_outputs:
            raise ResnetlabError(
                f"{data} has {n_data} classes but {weights} has {num_outputs} outputs"
            )
        index = tuple(range(n_data))
        if not unnamed and list(data_classes) == model_classes[:n_data]:
            return ClassMatch(index, "same", "")
        if ignore_names:
            why = "as asked (ignore_names)"
        elif is_unnamed(model_classes):
            why = f"{weights} names no classes"
        else:
            why = f"{data} names no classes"
        return ClassMatch(index, "index", f"classes matched by index: {why}")
    if list(data_classes) == model_classes:
        return ClassMatch(tuple(range(n_data)), "same", "")
    found = find_names(data_classes, model_classes)
    unknown = [c for c, i in zip(data_classes, found) if i is None]
    if unknown:
        fix = f", or match by index with {ignore_hint}" if ignore_hint else " to those names"
        raise ResnetlabError(
            f"{data} has {len(unknown)} class(es) that {weights} does not know: "
            f"{_shown(unknown)} (its classes: {_shown(model_classes)}); rename the folders{fix}"
        )
    index = tuple(int(i) for i in found)  # type: ignore[arg-type]
    if len(set(index)) < len(index):
        twice = [c for c, i in zip(data_classes, index) if index.count(i) > 1]
        raise ResnetlabError(
            f"{data}: classes {_shown(twice)} name the same class of {weights}",
            argument="ignore_names",
        )
    if n_data == len(model_classes):
        note = f"classes matched by name: {data} lists the {n_data} classes in another order"
    else:
        missing = [c for i, c in enumerate(model_classes) if i not in set(index)]
        note = (
            f"classes matched by name: {data} has {n_data} of the {len(model_classes)} classes "
            f"of {weights}; a prediction of {_shown(missing)} counts as an error"
        )
    return ClassMatch(index, "name", note)


@dataclass(frozen=True)
class HeadMatch:
    """Which rows of an old classifier a new label set keeps: `rows[j]` is the old row of new
    class j, or None for a class that gets a new row."""

    rows: tuple[int | None, ...]
    note: str

    @property
    def kept(self) -> int:
        """How many new classes start from an old row."""
        return sum(r is not None for r in self.rows)


def match_head(
    old_classes: Sequence[str] | None,
    num_old: int,
    new_classes: Sequence[str],
    *,
    weights: str = "the weights",
) -> HeadMatch:
    """Rows of an old head (`num_old` outputs named `old_classes`) for `new_classes`, by name; an
    index match where either side has no names and the counts agree; else all rows new."""
    n = len(new_classes)
    old = list(old_classes) if old_classes and len(old_classes) == num_old else None
    if is_unnamed(old) or is_unnamed(new_classes):
        if n == num_old:
            return HeadMatch(tuple(range(n)), f"head kept: {n} classes matched by index (unnamed)")
        return HeadMatch((None,) * n, f"new head for {n} classes ({weights} had {num_old})")
    if list(new_classes) == old:
        return HeadMatch(tuple(range(n)), "")
    rows = tuple(find_names(new_classes, old))
    new = [c for c, r in zip(new_classes, rows) if r is None]
    kept = n - len(new)
    dropped = [c for i, c in enumerate(old) if i not in set(rows)]
    parts = [f"head matched by name: {kept} of {n} classes keep their rows from {weights}"]
    if new:
        parts.append(f"new rows for {_shown(new)}")
    if dropped:
        parts.append(f"dropped {_shown(dropped)}")
    return HeadMatch(rows, "; ".join(parts))


def data_for_weights(
    meta: dict,
    data: ImageDataset,
    *,
    weights: str = "the weights",
    source: str = "the data",
    ignore_names: bool = False,
    ignore_hint: str | None = None,
) -> tuple[ImageDataset, ClassMatch]:
    """`data` with labels as the outputs of the weights whose metadata is `meta` (matched by
    name, see match_classes) and the weights' class names; and the match, whose `note` a caller
    prints.

    ignore_hint: how the caller's user asks for an index match instead (eval has a flag for it),
    named when the data has classes the weights do not know; None (the default) for a caller
    without one, such as quantize, whose users could not follow such a hint."""
    n = int(meta.get("num_classes") or 0)
    match = match_classes(
        meta.get("classes"),
        n,
        data.classes,
        weights=weights,
        data=source,
        ignore_names=ignore_names,
        ignore_hint=ignore_hint,
    )
    return match.remap(data, class_names(meta, n)), match
