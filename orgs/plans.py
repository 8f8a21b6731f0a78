"""The plan table: the one place that knows each plan's limits (docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class Plan(models.TextChoices):
    STARTER = "starter", "Starter"
    GROWTH = "growth", "Growth"
    ENTERPRISE = "enterprise", "Enterprise"


@dataclass(frozen=True)
class Limits:
    """Requests per minute, burst per second, requests per month. 0 means unlimited."""

    per_minute: int
    burst: int
    monthly: int


PLAN_LIMITS: dict[str, Limits] = {
    Plan.STARTER: Limits(per_minute=60, burst=10, monthly=100_000),
    Plan.GROWTH: Limits(per_minute=600, burst=50, monthly=2_000_000),
    Plan.ENTERPRISE: Limits(per_minute=6_000, burst=200, monthly=50_000_000),
}
