"""The table of training objectives: what data each trains on, whether it compares with a reference model, its
usual beta, and how a run holds that reference.

Every module that behaves differently per objective reads its entry here instead of listing objective names:
config validation (the names), the memory estimate (two sequences per example, the reference), the preference data
loader (pairs or labelled answers), the trainer (whether a frozen copy is made) and Evaluate (rewards relative to
the base or not). app.objectives adds what needs torch and TRL (the losses, TRL's trainer and its settings).

    >>> get("dpo").pairwise, get("kto").data, get("orpo").reference, get("simpo").beta
    (True, 'unpaired', False, 2.0)

No torch; only app.methods (itself import-free) among app modules: config.py reads this table too.
"""

from __future__ import annotations

from dataclasses import dataclass

from app import methods

PAIRS, UNPAIRED = "pairs", "unpaired"
"""Preference data kinds: a prompt with a chosen and a rejected answer, or one answer labelled good or bad (KTO)."""
NO_REFERENCE, ADAPTER_OFF, COPY, PRECOMPUTE = "none", "adapter_off", "copy", "precompute"
"""How a run holds its reference model (reference_of)."""


@dataclass(frozen=True)
class Objective:
    name: str
    data: str | None
    """None: supervised records (app.data); PAIRS or UNPAIRED: preference records (app.preference_data)."""
    reference: bool = False
    """Compares with a reference model (preference.reference applies; the estimate counts its forward)."""
    beta: float | None = None
    """The usual beta, used when preference.beta is empty."""

    @property
    def pairwise(self) -> bool:
        """Each example is a chosen and a rejected sequence: two sequences per example in every batch."""
        return self.data == PAIRS

    @property
    def preference(self) -> bool:
        return self.data is not None


TABLE: dict[str, Objective] = {
    "sft": Objective("sft", None),
    "dpo": Objective("dpo", PAIRS, reference=True, beta=0.1),
    "orpo": Objective("orpo", PAIRS, beta=0.1),  # beta: the odds-ratio weight (lambda in the paper)
    "simpo": Objective("simpo", PAIRS, beta=2.0),  # beta: the reward scale
    "kto": Objective("kto", UNPAIRED, reference=True, beta=0.1),
}
NAMES: tuple[str, ...] = tuple(TABLE)


def get(name: str) -> Objective:
    """The entry for `name`; ValueError naming the objectives there are."""
    try:
        return TABLE[name]
    except KeyError:
        raise ValueError(f"objective {name!r}: use one of {', '.join(NAMES)}") from None


def of(cfg: object) -> Objective:
    """The entry for a RunConfig's objective."""
    return get(cfg.objective)  # type: ignore[attr-defined]


def sequences_per_example(cfg: object) -> int:
    """2 for a pairwise objective (chosen and rejected in one batch), else 1."""
    return 2 if of(cfg).pairwise else 1


def reference_of(cfg: object) -> str:
    """How the run holds its reference model: none (sft, orpo, simpo), adapter_off (LoRA/QLoRA: the base with the
    adapter switched off), copy (a frozen copy: full/freeze, or preference.reference copy) or precompute (its
    log-probabilities computed once before training, no copy held)."""
    if not of(cfg).reference:
        return NO_REFERENCE
    policy = cfg.preference.reference  # type: ignore[attr-defined]
    if policy in (COPY, PRECOMPUTE):
        return policy
    return ADAPTER_OFF if methods.of(cfg).adapter else COPY
