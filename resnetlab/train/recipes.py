"""Training recipes: the paper's CIFAR schedule, and a fast one tuned for accuracy per CPU minute.

A recipe is a plain dataclass. The command line overrides single fields (--lr, --epochs,
--batch-size); everything else comes from here. Its schedule's shape (step, linear, cosine, the
warm-ups) is applied step by step by step.py's Schedule.

Another batch size with `fast` (and `accel`) scales the learning rate with it, the linear rule of
Goyal et al. 2017 from the recipe's reference batch (0.2 at 128: 0.4 at 256, 0.1 at 64), with a
warm-up over at least 10% of the steps when the batch is 2x the reference or more (as `accel`, 4x
`fast`, has); an --lr given is used as is. The recipe then records the reference it was scaled
from. `min_steps` is what a recipe needs to learn anything: a schedule shorter than that (2,000
images for 1 epoch at batch 128 is 15 steps) ends near chance, and the run says so and how many
epochs would do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule, regularisation and augmentation of one way to train."""

    name: str
    epochs: int
    batch_size: int
    lr: float  # peak learning rate at `batch_size`
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on BN parameters and biases
    schedule: str = "step"  # "step" (divide by 10 at `milestones`), "linear", "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training (step schedule)
    warmup_frac: float = 0.0  # linear warm-up from `warmup_start` x lr over this fraction of steps
    warmup_start: float = 0.1
    deep_warmup_lr: float = 0.0  # the paper: constant lr this low for nets of >= 110 layers ...
    deep_warmup_iters: int = 400  # ... for at most this many steps or until train error < 80%
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0 disables the moving average of the weights
    ema_every: int = 1  # update the average every this many steps (cheaper on a CPU)
    tta_flip: bool = False  # evaluate on the image and its mirror
    pad: int = 4  # random translation by up to this many pixels
    flip: bool = True
    erase: float = 0.0  # probability of random erasing per image
    scale_lr: bool = False  # another batch size scales lr linearly (from batch_size and lr above)
    min_steps: int = 0  # fewer steps in all than this: the run warns that it may not learn
    reference_batch: int | None = None  # when lr was scaled: the batch and lr it was scaled from
    reference_lr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-able values (for checkpoints and the summary)."""
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


# The CIFAR recipe of He et al. 2015 (Section 4.2): 64k iterations of batch 128 on 45k-50k images
# is about 164-182 epochs; 182 is the 50k-image count.
PAPER = Recipe(
    name="paper",
    epochs=182,
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="step",
    milestones=(0.5, 0.75),
    deep_warmup_lr=0.01,
    deep_warmup_iters=400,
    pad=4,
    flip=True,
    min_steps=1000,
)

# Accuracy per minute on a 2-core CPU; each choice is measured in docs/training.md.
FAST = Recipe(
    name="fast",
    epochs=10,
    batch_size=128,
    lr=0.2,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    decay_norm_and_bias=False,
    schedule="linear",
    warmup_frac=0.05,
    label_smoothing=0.1,
    ema_decay=0.0,
    tta_flip=True,
    pad=2,
    flip=True,
    scale_lr=True,
    min_steps=300,
)

# The fast recipe for accelerators: a GPU is idle at batch 128, so the batch is 4x larger and the
# learning rate with it (the linear scaling rule of Goyal et al. 2017), after a longer warm-up;
# twice the epochs make up for the fewer steps. Measured in docs/training.md.
ACCEL = replace(FAST, name="accel", epochs=20, batch_size=512, lr=0.8, warmup_frac=0.1)

RECIPES = {"paper": PAPER, "fast": FAST, "accel": ACCEL}
RECIPE_CHOICES = ("auto", *RECIPES)
SCALED_WARMUP = 0.1  # least warm-up (fraction of steps) once the lr is scaled 2x or more


def auto_recipe(name: str, device: str, batch_size: int | None = None) -> str:
    """The recipe `auto` stands for: accel on CUDA unless a batch size is given, else fast."""
    if name != "auto":
        return name
    return "accel" if device.startswith("cuda") and batch_size is None else "fast"


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A named recipe with some fields replaced (None values are ignored); another batch_size
    without an lr scales the lr linearly where the recipe says so (scale_lr). The name and the
    values are trusted: check_config (config.py) checked them."""
    fields = {k: v for k, v in overrides.items() if v is not None}
    base = RECIPES[name]
    batch = fields.get("batch_size", base.batch_size)
    if base.scale_lr and "lr" not in fields and batch != base.batch_size:
        k = batch / base.batch_size
        fields.update(lr=base.lr * k, reference_batch=base.batch_size, reference_lr=base.lr)
        if k >= 2:
            fields["warmup_frac"] = max(base.warmup_frac, SCALED_WARMUP)
    return replace(base, **fields)


def lr_note(recipe: Recipe) -> str:
    """How the recipe's lr came about, for the run's description ('' when not scaled)."""
    if recipe.reference_batch is None:
        return ""
    return (
        f" (scaled with the batch: {recipe.reference_lr:g} x "
        f"{recipe.batch_size}/{recipe.reference_batch})"
    )


def too_few_steps(recipe: Recipe, steps_per_epoch: int) -> str | None:
    """A one-line warning when the schedule is too short for the recipe to learn, naming the
    epochs that would give it enough steps; None when it is long enough."""
    from .logs import plural

    total = recipe.epochs * steps_per_epoch
    if total >= recipe.min_steps:
        return None
    need = math.ceil(recipe.min_steps / max(1, steps_per_epoch))
    return (
        f"{plural(total, 'step')} ({plural(recipe.epochs, 'epoch')} of "
        f"{plural(steps_per_epoch, 'step')} at batch {recipe.batch_size}) is too short for the "
        f"{recipe.name} recipe, which needs about {recipe.min_steps} steps to learn; the run may "
        f"end near chance: train {plural(need, 'epoch')} or more (--epochs {need})"
    )
