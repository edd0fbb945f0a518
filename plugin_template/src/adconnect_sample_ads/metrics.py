"""Sample Ads metrics (ids are permanent: ``sample_ads.<name>``)."""

from __future__ import annotations

from adconnect import MetricDefinition

# TODO: declare the metrics the provider delivers.
METRICS = [
    MetricDefinition(
        metric_id="sample_ads.impressions",
        level="campaign",
        unit="count",
        title="Impressions",
        is_default=True,
    ),
    MetricDefinition(
        metric_id="sample_ads.clicks", level="campaign", unit="count", title="Clicks", is_default=True
    ),
    MetricDefinition(
        metric_id="sample_ads.spend",
        level="campaign",
        unit="micros",
        title="Spend",
        required_scopes="read_reports",
    ),
]
