"""The nets the studies compare: CIFAR-style plain and residual twins of depth 6n+2."""

from __future__ import annotations

from typing import Any

from ..errors import ResnetlabError
from ..models import get_entry

FAMILIES = ("plain", "resnet")


def parse_depths(text: str) -> tuple[int, ...]:
    """'20,56' -> (20, 56); each depth must be 6n+2 with n >= 1 (the paper's CIFAR nets)."""
    depths = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            d = int(item)
        except ValueError:
            raise ResnetlabError(
                f"depths {text!r}: {item!r} is not a whole number; e.g. 20,56", argument="depths"
            ) from None
        if d < 8 or (d - 2) % 6:
            raise ResnetlabError(
                f"depth {d} is not of the form 6n+2 (n >= 1); CIFAR nets are 8, 14, 20, 32, 44, "
                "56, 110, ..."
            )
        depths.append(d)
    if not depths:
        raise ResnetlabError(f"depths {text!r}: no depth given; e.g. 20,56", argument="depths")
    return tuple(dict.fromkeys(depths))


def parse_families(text: str) -> tuple[str, ...]:
    """'plain,resnet' -> ('plain', 'resnet'); unknown names fail in one line."""
    families = tuple(dict.fromkeys(f.strip() for f in str(text).split(",") if f.strip()))
    if not families:
        raise ResnetlabError("no family given; use plain, resnet or plain,resnet")
    for f in families:
        if f not in FAMILIES:
            raise ResnetlabError(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    return families


def cifar_net(family: str, depth: int) -> tuple[str, dict[str, Any]]:
    """(registered name, options) of the net: every depth 6n+2 up to 1202 has a name of its own
    (`plain56`, `resnet8`), which logs, metadata and legends show; no options are needed."""
    if family not in FAMILIES:
        raise ResnetlabError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    parse_depths(str(depth))
    name = f"{family}{depth}"
    get_entry(name)  # a depth beyond the named ones fails here, in one line
    return name, {}


def study_net_of(meta: dict[str, Any]) -> tuple[str, int] | None:
    """(family, depth) of the CIFAR basic-block net a weights file's metadata describes, or None
    when it describes another kind of net."""
    from ..models import get_entry

    try:
        entry = get_entry(str(meta.get("name")))
    except ResnetlabError:
        return None
    spec = entry.spec
    if spec is None or entry.layout != "cifar" or spec.block != "basic" or spec.preact:
        return None
    if entry.family not in FAMILIES:
        return None
    layers = (meta.get("options") or {}).get("layers", spec.layers)
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
