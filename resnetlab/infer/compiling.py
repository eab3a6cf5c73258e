"""Whether compiling pays for one model and batch on this CPU: decided quickly, remembered.

torch.compile (inductor, frozen weights) costs tens of seconds per model and batch on a 2-core CPU
(ResNet-50 at batch 1: 84.7 s under load, docs/inference.md) and gains little, or loses, where a
call is small: ResNet-20 at batch 1 ran slower compiled than not (issue 18), while ResNet-50 ran
1.05x (batch 1) and 1.14x (batch 16) faster compiled. So the fast path compiles on a CPU only
where a call is faster compiled, decided without compiling:

- from a measurement of both, when `bench` has timed the compiled and the uncompiled fast path of
  this model at this batch here (`learn`): compiled pays when it ran at least SPEEDUP_MIN faster;
- else from the size of one call, multiply-adds x batch: it pays from CALL_MACS_MIN on, where the
  arithmetic outweighs the compiled wrapper's fixed cost per call.

The decision is kept in the measurement cache (infer/backends.py: RESNETLAB_CACHE), keyed by the
CPU and its vector units, the thread count, the torch version, the model, its input size, the
batch and the precision; a second call reads it back without counting or measuring. A cache that
cannot be written costs one line on the log and nothing else. Whether the work ahead repays the
compile time at all is policy.py's rule (COMPILE_MIN_MACS); this one says whether each call gains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..hardware import cpu_features, cpu_model
from .backends import arch_key, remember, remembered

SECTION = "compile"
# one call of at least this many multiply-adds gains from compiling (ResNet-20 at batch 1, 0.04
# GMACs, lost; ResNet-50 at batch 1, 4.1 GMACs, gained)
CALL_MACS_MIN = 1e9
SPEEDUP_MIN = 1.05  # compiled must run this much faster than uncompiled to be worth its time


@dataclass(frozen=True)
class CompileDecision:
    """Whether to compile, why (in words, with the figures), and where it came from."""

    compile: bool
    why: str
    source: str  # "size" (the rule), "measured" (by bench), or "cache" (either, read back)


def decision_key(
    model: nn.Module, input_size: tuple[int, ...], batch: int, precision: str, threads: int
) -> str | None:
    """What the decision depends on: CPU, vector units, threads, torch, model, size, batch,
    precision; None for a model without a resnetlab config (nothing to key it by)."""
    arch = arch_key(getattr(model, "resnetlab_config", None), input_size, batch)
    if arch is None:
        return None
    feats = ",".join(k for k, v in cpu_features().items() if v)
    return f"{cpu_model()}|{feats}|{threads} threads|torch {torch.__version__}|{arch}|{precision}"


def decide(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch: int,
    precision: str,
    *,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> CompileDecision:
    """Whether the fast path of `model` at `batch` gains from compiling on this CPU, in
    `precision` ('fp32' or 'bf16'): the cached decision, else the size rule (then cached)."""
    threads = threads or torch.get_num_threads()
    key = decision_key(model, input_size, batch, precision, threads)
    if key is not None:
        got = remembered(SECTION, key)
        if got is not None and isinstance(got.get("compile"), bool):
            why = f"{got.get('why', '')} (remembered here)"
            return CompileDecision(got["compile"], why, "cache")
    if log:
        log(f"batch {batch}: does compiling pay? counting the multiply-adds of one call")
    decision = _by_size(model, input_size, batch)
    if key is not None:
        remember(SECTION, key, {"compile": decision.compile, "why": decision.why,
                                "source": decision.source})  # fmt: skip
    return decision


def _by_size(model: nn.Module, input_size: tuple[int, ...], batch: int) -> CompileDecision:
    from ..models.stats import count_macs

    try:
        macs = count_macs(model, tuple(input_size)) * batch
    except Exception:  # a shape the model rejects: let the real call report it
        return CompileDecision(False, "the size of a call could not be counted", "size")
    pays = macs >= CALL_MACS_MIN
    side = "at least" if pays else "below"
    return CompileDecision(
        pays, f"{macs / 1e9:.2f} GMACs a call, {side} {CALL_MACS_MIN / 1e9:g} GMACs", "size"
    )


def learn(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch: int,
    precision: str,
    *,
    compiled: float,
    uncompiled: float,
    threads: int | None = None,
) -> CompileDecision:
    """Keep what a measurement of both showed (images/s compiled and not): it replaces the size
    rule's guess for this model and batch here."""
    pays = compiled >= SPEEDUP_MIN * uncompiled
    why = (
        f"measured by bench: compiled {compiled:.1f}, uncompiled {uncompiled:.1f} images/s "
        f"({compiled / max(uncompiled, 1e-9):.2f}x; pays from {SPEEDUP_MIN:g}x)"
    )
    decision = CompileDecision(pays, why, "measured")
    key = decision_key(model, input_size, batch, precision, threads or torch.get_num_threads())
    if key is not None:
        speeds = {"compiled": compiled, "uncompiled": uncompiled}
        remember(SECTION, key, {"compile": pays, "why": why, "source": "measured",
                                "images_per_s": speeds})  # fmt: skip
    return decision


def describe(decision: CompileDecision) -> str:
    """'compiled (why)' or 'not compiled (why)'."""
    return f"{'compiled' if decision.compile else 'not compiled'} ({decision.why})"


__all__ = ["CompileDecision", "decide", "decision_key", "describe", "learn"]
