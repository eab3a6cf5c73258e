"""The nets the studies compare, and where a study keeps them.

Two kinds of twins: the CIFAR nets of the 2015 paper, plain and residual, of depth 6n+2, each
under a name of its own (`plain56`, `resnet8`: never resnet20 with layers=[1,1,1]); and the
residual MLP and its plain twin on flattened images (`residual_mlp`, `plain_mlp`), whose depth is
the number of blocks of two Linear layers, all of the same width. A study keeps each net in
`OUT/<family><depth>-s<seed>/` (degradation) and lists them in its JSON; `study_nets` reads
either, so another command can use a study's nets without being told their depths.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResnetlabError
from ..models import get_entry
from ..models.mlp import ResidualMLP
from .tasks import is_diverged, is_finished

CONV_FAMILIES = ("plain", "resnet")
MLP_FAMILIES = ("plain_mlp", "residual_mlp")
FAMILIES = CONV_FAMILIES + MLP_FAMILIES
MLP_DEFAULT_DEPTH = inspect.signature(ResidualMLP).parameters["depth"].default
MAX_MLP_DEPTH = 1000
_FOLDER = re.compile(r"(plain_mlp|residual_mlp|plain|resnet)([0-9]+)-s([0-9]+)")


def is_mlp(family: str) -> bool:
    """True for the MLP twins (plain_mlp, residual_mlp)."""
    return family in MLP_FAMILIES


def _whole(text: str, item: str) -> int:
    try:
        return int(item)
    except ValueError:
        raise ResnetlabError(
            f"depths {text!r}: {item!r} is not a whole number; e.g. 20,56", argument="depths"
        ) from None


def check_depth(depth: int, family: str = "resnet") -> None:
    """A conv net's depth is 6n+2 (n >= 1); an MLP's is a number of blocks, 1 or more."""
    if is_mlp(family):
        if not 1 <= depth <= MAX_MLP_DEPTH:
            raise ResnetlabError(
                f"depth {depth} of {family}: a number of blocks from 1 to {MAX_MLP_DEPTH}, e.g. "
                "4,16,64"
            )
        return
    if depth < 8 or (depth - 2) % 6:
        raise ResnetlabError(
            f"depth {depth} is not of the form 6n+2 (n >= 1); CIFAR nets are 8, 14, 20, 32, 44, "
            "56, 110, ..."
        )


def parse_depths(text: str, families: tuple[str, ...] = CONV_FAMILIES) -> tuple[int, ...]:
    """'20,56' -> (20, 56), each a depth every one of `families` has (6n+2 for conv nets)."""
    depths = []
    for item in str(text).split(","):
        d = _whole(text, item.strip())
        for f in families:
            check_depth(d, f)
        depths.append(d)
    if not depths:
        raise ResnetlabError(f"depths {text!r}: no depth given; e.g. 20,56", argument="depths")
    return tuple(dict.fromkeys(depths))


def parse_families(text: str, allowed: tuple[str, ...] = FAMILIES) -> tuple[str, ...]:
    """'plain,resnet' -> ('plain', 'resnet'); unknown names fail in one line."""
    families = tuple(dict.fromkeys(f.strip() for f in str(text).split(",") if f.strip()))
    if not families:
        raise ResnetlabError(f"no family given; use {', '.join(allowed)}", argument="families")
    for f in families:
        if f not in allowed:
            raise ResnetlabError(f"unknown family {f!r}; choose from {', '.join(allowed)}")
    return families


def cifar_net(family: str, depth: int) -> tuple[str, dict[str, Any]]:
    """(registered name, options) of the conv net: every depth 6n+2 up to 1202 has a name of its
    own (`plain56`, `resnet8`), which logs, metadata and legends show; no options are needed."""
    if family not in CONV_FAMILIES:
        raise ResnetlabError(f"unknown family {family!r}; choose from {', '.join(CONV_FAMILIES)}")
    check_depth(depth, family)
    name = f"{family}{depth}"
    get_entry(name)  # a depth beyond the named ones fails here, in one line
    return name, {}


def study_net(family: str, depth: int) -> tuple[str, dict[str, Any]]:
    """(registered name, options) of a study's net: a conv twin by its name, or an MLP twin
    (`residual_mlp`, `plain_mlp`) with depth=`depth` blocks."""
    if not is_mlp(family):
        return cifar_net(family, depth)
    check_depth(depth, family)
    return family, {"depth": depth}


def net_label(family: str, depth: int) -> str:
    """How messages and legends name a net: 'resnet-20', 'residual_mlp-16'."""
    return f"{family}-{depth}"


def study_net_of(meta: dict[str, Any]) -> tuple[str, int] | None:
    """(family, depth) of the study net a weights file's metadata describes (a CIFAR basic-block
    twin or an MLP twin), or None when it describes another kind of net."""
    try:
        entry = get_entry(str(meta.get("name")))
    except ResnetlabError:
        return None
    options = meta.get("options") or {}
    if entry.is_mlp:
        depth = options.get("depth", MLP_DEFAULT_DEPTH)
        if not isinstance(depth, int) or isinstance(depth, bool):
            return None
        return ("plain_mlp" if entry.mlp_plain else "residual_mlp"), depth
    spec = entry.spec
    if spec is None or entry.layout != "cifar" or spec.block != "basic" or spec.preact:
        return None
    if entry.family not in CONV_FAMILIES:
        return None
    layers = options.get("layers", spec.layers)
    if not isinstance(layers, (list, tuple)) or not all(isinstance(n, int) for n in layers):
        return None
    return entry.family, 2 + 2 * sum(layers)


def check_study_net(meta: dict[str, Any], family: str, depth: int, path: str) -> None:
    """Refuse weights in a study folder that are not the net the folder's name claims."""
    found = study_net_of(meta)
    if found != (family, depth):
        said = f"{found[0]}-{found[1]}" if found else repr(meta.get("name"))
        raise ResnetlabError(
            f"{path}: the folder claims {family}-{depth}, but the weights are {said}; "
            "expected the study's own net"
        )


@dataclass(frozen=True)
class StudyNet:
    """A net of a degradation study: which twin, which seed, where its weights are; or one that
    diverged (its folder holds diverged.json; no weights to probe)."""

    family: str
    depth: int
    seed: int
    weights: Path
    diverged: bool = False


def study_nets(study: str | Path, json_name: str = "degradation.json") -> list[StudyNet]:
    """The nets of a degradation study, trained to their end or diverged: from its JSON when it
    has one, else from its folders `<family><depth>-s<seed>/` with last.safetensors and
    summary.json, or diverged.json; in (depth, family, seed) order. A net still training (or
    stopped) is not one of them: its last.safetensors is an epoch's."""
    root = Path(study)
    if not root.is_dir():
        raise ResnetlabError(
            f"{study} is not a directory (expected the output directory of a degradation study)"
        )
    found: dict[tuple[str, int, int], Path] = {}
    table = root / json_name
    if not table.is_file() and (root / "overfitting.json").is_file():
        raise ResnetlabError(f"{study} is an overfitting study; expected a degradation study")
    if table.is_file():
        for rec in _records(table):
            key = (rec.get("family"), rec.get("depth"), rec.get("seed"))
            if key[0] not in FAMILIES or not all(_count(v) for v in key[1:]):
                raise ResnetlabError(
                    f"{table}: a net's record gives family {key[0]!r}, depth {key[1]!r}, seed "
                    f"{key[2]!r}; expected one of {', '.join(FAMILIES)} and whole numbers"
                )
            found[key] = root / f"{key[0]}{key[1]}-s{key[2]}" / "last.safetensors"
    for sub in sorted(root.iterdir()) if not found else []:
        m = _FOLDER.fullmatch(sub.name)
        if m and ((sub / "last.safetensors").is_file() or is_diverged(sub)):
            found[(m.group(1), int(m.group(2)), int(m.group(3)))] = sub / "last.safetensors"
    gone = {k for k, w in found.items() if is_diverged(w.parent)}
    nets = [StudyNet(f, d, s, w, (f, d, s) in gone) for (f, d, s), w in found.items()
            if w.is_file() and is_finished(w.parent) or (f, d, s) in gone]  # fmt: skip
    return _in_study_order(nets)


def unfinished_nets(study: str | Path) -> list[StudyNet]:
    """The run folders `<family><depth>-s<seed>/` of a study that neither trained to their end
    nor diverged (still training, or stopped), in the order of study_nets."""
    root = Path(study)
    nets = []
    for sub in sorted(root.iterdir()) if root.is_dir() else []:
        m = _FOLDER.fullmatch(sub.name)
        if m and sub.is_dir() and not is_finished(sub) and not is_diverged(sub):
            nets.append(StudyNet(m.group(1), int(m.group(2)), int(m.group(3)),
                                 sub / "last.safetensors"))  # fmt: skip
    return _in_study_order(nets)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def _in_study_order(nets: list[StudyNet]) -> list[StudyNet]:
    """Conv nets before MLPs, then by depth, family (FAMILIES order) and seed."""
    order = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(nets, key=lambda n: (is_mlp(n.family), n.depth, order[n.family], n.seed))


def _records(path: Path) -> list[dict[str, Any]]:
    """The per-net records of a study's JSON: {"nets": [...]}, or a bare list (older studies)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nesting too deep
        raise ResnetlabError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if isinstance(value, dict):
        value = value.get("nets")
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise ResnetlabError(f"{path}: expected the list of a study's nets")
    return value
