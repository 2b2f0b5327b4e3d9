"""Degrade tiers (``degrade=``): which tier a request's budgets put it in, and an LLM call rewritten to it.

Pure: the budgets' figures come from the admission (:class:`~.admission.Consumed`), the call's
keyword arguments from the instrumented SDK method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import InvalidOperation
from typing import Any

from .admission import Consumed
from .money import Money, to_decimal

__all__ = ["CAP_FIELDS", "Degrade", "Tier", "degrade_of", "rewrite", "tier_for", "tightest"]

# The output caps of the SDKs' methods: chat completions (older and newer name), Responses API;
# Anthropic's messages take ``max_tokens``.
CAP_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class Tier:
    """One degrade tier: from consumed share ``at`` (``"0.80"``: 80 %) of a budget on, instrumented
    calls use ``models[model]`` instead of ``model`` and ask for at most ``max_tokens`` output tokens.

    ``at`` is a share in (0, 1]; ``models`` maps requested model names to substitutes; ``name``
    labels the tier in metrics (``str(at)`` by default). Invalid values raise ``ValueError``.
    """

    __slots__ = ("at", "max_tokens", "models", "name")

    def __init__(self, at: Money, models: Mapping[str, str] | None = None, max_tokens: int | None = None, *,
                 name: str | None = None) -> None:
        try:
            share = to_decimal(at)
        except (TypeError, ValueError, InvalidOperation) as error:
            raise ValueError(f"at: a share in (0, 1] such as \"0.80\", not {at!r}") from error
        if not share.is_finite() or not 0 < share <= 1:
            raise ValueError(f"at: a share in (0, 1] such as \"0.80\", not {at!r}")
        found = dict(models or {})
        if not all(isinstance(key, str) and key and isinstance(value, str) and value for key, value in found.items()):
            raise ValueError(f"models: a dict of model name to model name, not {models!r}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise ValueError(f"max_tokens: a positive whole number of tokens (or None), not {max_tokens!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name: a non-empty string (or None), not {name!r}")
        self.at = share
        self.models: Mapping[str, str] = found
        self.max_tokens = max_tokens
        self.name = name if name is not None else str(share)

    def model(self, requested: str) -> str:
        """The model a call asking for ``requested`` uses in this tier."""
        return self.models.get(requested, requested)

    def __repr__(self) -> str:
        return f"Tier(at={str(self.at)!r}, models={dict(self.models)!r}, max_tokens={self.max_tokens!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tier) and (self.at, dict(self.models), self.max_tokens, self.name) == (
            other.at, dict(other.models), other.max_tokens, other.name)

    def __hash__(self) -> int:
        return hash((self.at, self.max_tokens, self.name))


@dataclass(frozen=True, slots=True)
class Degrade:
    """``degrade=`` validated: tiers for the tightest of all budgets (``every``), or per budget
    (``by_budget``: a period name of the identity's own budgets, or a budget id), each ascending."""

    every: tuple[Tier, ...] = ()
    by_budget: Mapping[str, tuple[Tier, ...]] | None = None

    @property
    def tiers(self) -> tuple[Tier, ...]:
        """Every tier, ascending by ``at`` (the order a too-large estimate is tried in)."""
        if self.by_budget is None:
            return self.every
        return tuple(sorted({tier: None for tiers in self.by_budget.values() for tier in tiers}, key=lambda t: t.at))


def _tiers(value: object, where: str) -> tuple[tuple[Tier, ...], list[tuple[str, str]]]:
    if isinstance(value, Tier):
        value = [value]
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return (), [(where, f"a list of Tier(at=..., models=..., max_tokens=...), not {value!r}")]
    tiers = list(value)
    problems = [(f"{where}[{index}]", f"a Tier, not {tier!r}") for index, tier in enumerate(tiers)
                if not isinstance(tier, Tier)]
    if problems:
        return (), problems
    if not tiers:
        return (), [(where, "at least one Tier")]
    for index in range(1, len(tiers)):
        if tiers[index].at <= tiers[index - 1].at:
            problems.append((f"{where}[{index}]", f"tiers ascend by 'at': {tiers[index].at} follows "
                                                  f"{tiers[index - 1].at}"))
    return tuple(tiers), problems


def degrade_of(value: object) -> tuple[Degrade | None, list[tuple[str, str]]]:
    """``degrade=`` as given (a list of tiers, or ``{budget: [tiers]}``), validated: the
    :class:`Degrade` (``None`` when not given) and the problems found, each ``(where, message)``."""
    if value is None:
        return None, []
    if isinstance(value, Mapping):
        if not value:
            return None, [("", "a list of Tier, or a dict of budget (period name or budget id) to a list of Tier")]
        found: dict[str, tuple[Tier, ...]] = {}
        problems: list[tuple[str, str]] = []
        for key, tiers in value.items():
            if not isinstance(key, str) or not key:
                problems.append((f"[{key!r}]", "a budget's period name (daily, ..., one_time) or budget id"))
                continue
            found[key], more = _tiers(tiers, f"[{key!r}]")
            problems += more
        return (None if problems else Degrade(by_budget=found)), problems
    tiers, problems = _tiers(value, "")
    return (None if problems else Degrade(every=tiers)), problems


def tightest(consumed: Sequence[Consumed]) -> Consumed | None:
    """The budget with the largest consumed share (of equal shares, the first: daily before monthly)."""
    best: Consumed | None = None
    for each in consumed:
        if best is None or each.used * best.amount > best.used * each.amount:
            best = each
    return best


def _reached(tiers: Sequence[Tier], consumed: Consumed) -> Tier | None:
    found = None
    for tier in tiers:
        if not consumed.amount or consumed.share_at_least(tier.at):
            found = tier
    return found


def tier_for(consumed: Sequence[Consumed], degrade: Degrade) -> Tier | None:
    """The highest tier the budgets' consumed shares reach: that of the tightest budget for tiers
    of all budgets; per budget, the highest (by ``at``) that any budget's own tiers reach."""
    if degrade.by_budget is None:
        tight = tightest(consumed)
        return None if tight is None else _reached(degrade.every, tight)
    found: Tier | None = None
    for each in consumed:
        tiers = degrade.by_budget.get(each.key)
        reached = _reached(tiers, each) if tiers else None
        if reached is not None and (found is None or reached.at > found.at):
            found = reached
    return found


def rewrite(kwargs: dict[str, Any], tier: Tier, cap: str) -> None:
    """An SDK call's keyword arguments in ``tier``: its model substituted, its output caps lowered
    to ``tier.max_tokens`` (never raised); ``cap`` is set when the call gave none."""
    model = kwargs.get("model")
    if isinstance(model, str):
        kwargs["model"] = tier.model(model)
    most = tier.max_tokens
    if most is None:
        return
    given = False
    for name in CAP_FIELDS:
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            given = True
            if value > most:
                kwargs[name] = most
    if not given:
        kwargs[cap] = most
