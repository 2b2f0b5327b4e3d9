"""One request's usage as the middleware gathers it (nano-USD and tokens, per model): plain values."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ModelUsage", "Usage"]


@dataclass(slots=True)
class ModelUsage:
    """One model's share of a request's usage: its calls, cost (nano-USD) and tokens."""

    requests: int = 0
    cost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def merge(self, other: ModelUsage) -> None:
        self.requests += other.requests
        self.cost += other.cost
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens


@dataclass(slots=True)
class Usage:
    """One request's usage, gathered by ``record_usage`` and committed once (nano-USD).

    ``models`` breaks it down per model (each call counted as one request of its model);
    ``unpriced`` counts the calls whose model had no known price (recorded at cost 0).
    """

    cost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    models: dict[str, ModelUsage] = field(default_factory=dict)
    error: bool = False
    unpriced: int = 0

    def add(self, cost: int, input_tokens: int, output_tokens: int, model: str | None, *,
            unpriced: bool = False) -> None:
        self.cost += cost
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.unpriced += unpriced
        if model:
            share = self.models.get(model)
            if share is None:
                share = self.models[model] = ModelUsage()
            share.requests += 1
            share.cost += cost
            share.input_tokens += input_tokens
            share.output_tokens += output_tokens
