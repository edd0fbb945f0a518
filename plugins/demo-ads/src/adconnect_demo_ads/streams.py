"""Demo Ads streams: record models, keys, cursors and lookback."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel

from adconnect import StreamSpec


class CampaignDaily(BaseModel):
    """One campaign's performance on one day. Money stays in micros."""

    account_id: str
    campaign_id: str
    campaign_name: str
    date: date
    impressions: int
    clicks: int
    spend_micros: int


# TODO: declare every stream the provider offers.
STREAMS = [
    StreamSpec(
        name="campaign_daily",
        record_model=CampaignDaily,
        primary_key=("account_id", "campaign_id", "date"),
        cursor_field="date",
        default_lookback=timedelta(days=3),
        max_lookback=timedelta(days=30),
        chunk=timedelta(days=30),
        description="Daily campaign performance.",
    ),
]
