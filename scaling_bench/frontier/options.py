"""What a frontier study is asked for, checked before anything runs: ``FrontierOptions``.

Every bad option is refused here with the flag and the value (``UserError``, exit 2), so the
design (``frontier.design``) and the runs (``frontier.run``) only ever see a study they can plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling_bench.core import precision as precisions
from scaling_bench.core.errors import UserError
from scaling_bench.core.precision import Precision
from scaling_bench.models import FAMILY_NAMES, family

#: Chinchilla's compute-optimal ratio: where the sizes of each budget are centred.
PRIOR_TOKENS_PER_PARAM = 20.0
MIN_SIZES, MIN_BUDGETS, MIN_RATIO = 3, 2, 2.0


@dataclass(frozen=True)
class FrontierOptions:
    """What the user asked for; exactly one of ``seconds`` and ``flops`` is the study's size."""

    family: str = "gpt"
    seconds: float | None = None
    flops: float | None = None
    dataset: str = "text"
    budgets: int = 4
    ratio: float = 3.0
    sizes_per_budget: int = 5
    tokens_per_param: float = PRIOR_TOKENS_PER_PARAM
    seq_len: int | None = 64
    batch_size: int | None = None
    lrs: tuple[float, ...] = (2e-3,)
    precision: str = "fp32"
    device: str = "cpu"
    heldout_size: int = 512
    probe_budget_s: float = 1.0
    #: Torch threads per worker (None: torch's default, one per core).
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lrs", tuple(float(lr) for lr in self.lrs))
        if (self.seconds is None) == (self.flops is None):
            raise UserError("give the study's size as one of --budget (time) and --flops")
        fam = family(self.family)
        if not hasattr(fam, "tokens_per_sample"):
            with_tokens = [n for n in FAMILY_NAMES if hasattr(family(n), "tokens_per_sample")]
            raise UserError(
                f"--family {self.family}: a frontier is in tokens, and the {self.family} family "
                f"has no token count per sample; use {' or '.join(with_tokens)}"
            )
        from scaling_bench.models.datasets import check_dataset  # torch: not to read records

        check_dataset(self.dataset, self.family)
        if self.sizes_per_budget < MIN_SIZES:
            raise UserError(
                f"--sizes-per-budget {self.sizes_per_budget}: a budget's parabola in log N "
                f"needs at least {MIN_SIZES} sizes"
            )
        if self.budgets < MIN_BUDGETS:
            raise UserError(
                f"--budgets {self.budgets}: the scaling exponents need at least {MIN_BUDGETS}"
            )
        if not self.ratio >= MIN_RATIO:
            raise UserError(
                f"--ratio {self.ratio:g}: budgets must be at least {MIN_RATIO:g}x apart"
            )
        for name in ("seconds", "flops", "tokens_per_param", "probe_budget_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"frontier {name}={value!r} must be a positive number")
        precisions.get(self.precision)
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: must be at least 1")

    @property
    def precision_of(self) -> Precision:
        """The ``Precision`` called ``precision`` (the name is what a design file keeps)."""
        return precisions.get(self.precision)

    @property
    def overrides(self) -> dict[str, object]:
        return {} if self.seq_len is None else {"seq_len": self.seq_len}

    @property
    def batch(self) -> int:
        return self.batch_size or family(self.family).DEFAULT_BATCH_SIZE
