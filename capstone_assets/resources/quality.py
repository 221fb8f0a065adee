"""Thresholds of the data-quality checks an operator may tune."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from capstone_assets.checks import DEFAULT_REJECT_RATE_THRESHOLD


class QualityResource(ConfigurableResource):
    """Settings of the warning checks (blocking checks have nothing to tune)."""

    reject_rate_threshold: float = Field(
        default=DEFAULT_REJECT_RATE_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="reject_rate warns when the day's or an exchange's rejects / lines exceed this",
    )
