"""Demo Ads metrics (ids are permanent: ``demo_ads.<name>``)."""

from __future__ import annotations

from adconnect import MetricDefinition

# TODO: declare the metrics the provider delivers.
METRICS = [
    MetricDefinition(
        metric_id="demo_ads.impressions",
        level="campaign",
        unit="count",
        title="Impressions",
        is_default=True,
    ),
    MetricDefinition(
        metric_id="demo_ads.clicks", level="campaign", unit="count", title="Clicks", is_default=True
    ),
    MetricDefinition(
        metric_id="demo_ads.spend",
        level="campaign",
        unit="micros",
        title="Spend",
        required_scopes="read_reports",
    ),
]
