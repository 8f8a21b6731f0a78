"""`GET /api/v1/usage`: the org's request counts per key and hour or day (scope usage:read).

Filters: `key` (a key id, `key_…`, of the org), `since`, `until` (ISO 8601; the range is
[since, until), aligned down to the bucket), `granularity` (`hour`, default, or `day`).
Without `since`/`until`: the last 24 hours (hourly) or the last 30 days (daily).
Figures come from the folded counters, at most a minute behind (ADR 0062); the series is
bounded by its range (31 days of hours, 366 of days), so it is one response, not paginated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys import selectors, usage
from apikeys.api_base import OrgApiView
from apikeys.errors import ApiError
from apikeys.models import Environment
from apikeys.serializers import (
    FilterDateTimeField,
    StrictCharField,
    StrictChoiceField,
    StrictSerializer,
)

MAX_RANGE = {usage.HOURLY: timedelta(days=31), usage.DAILY: timedelta(days=366)}
DEFAULT_RANGE = {usage.HOURLY: timedelta(hours=24), usage.DAILY: timedelta(days=30)}


def _floor(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == usage.DAILY else moment


def _ceil(moment: datetime, granularity: str) -> datetime:
    floored = _floor(moment, granularity)
    if floored == moment:
        return floored
    return floored + (timedelta(days=1) if granularity == usage.DAILY else timedelta(hours=1))


class UsageFilterSerializer(StrictSerializer):
    key = StrictCharField(
        required=False, max_length=64, help_text="Only this key (`key_…`) of the organisation."
    )
    since = FilterDateTimeField(
        required=False, help_text="ISO 8601; from this bucket on (aligned down)."
    )
    until = FilterDateTimeField(
        required=False, help_text="ISO 8601; up to this moment, exclusive (aligned up)."
    )
    granularity = StrictChoiceField(
        choices=[usage.HOURLY, usage.DAILY],
        required=False,
        help_text="`hour` (default) or `day` (UTC days).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        granularity = attrs.get("granularity") or usage.HOURLY
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or (until - DEFAULT_RANGE[granularity])
        since, until = _floor(since, granularity), _ceil(until, granularity)
        if since >= until:
            raise serializers.ValidationError({"since": ["Must be before `until`."]})
        if until - since > MAX_RANGE[granularity]:
            days = MAX_RANGE[granularity].days
            raise serializers.ValidationError(
                {"since": [f"The range may span at most {days} days at this granularity."]}
            )
        return {**attrs, "granularity": granularity, "since": since, "until": until}


class UsageBucketSerializer(serializers.Serializer[Any]):
    key = serializers.CharField(source="key_id", help_text="The key, `key_…`.")
    period_start = serializers.DateTimeField(help_text="Start of the hour or day (UTC).")
    requests = serializers.IntegerField()
    requests_2xx = serializers.IntegerField(source="count_2xx")
    requests_4xx = serializers.IntegerField(source="count_4xx")
    requests_5xx = serializers.IntegerField(source="count_5xx")
    client_versions = serializers.SerializerMethodField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    last_used_ip = serializers.IPAddressField(allow_null=True)

    def get_client_versions(self, bucket: usage.UsageBucket) -> list[str]:
        return sorted(bucket.client_versions)


class UsageTotalsSerializer(serializers.Serializer[Any]):
    requests = serializers.IntegerField()
    requests_2xx = serializers.IntegerField()
    requests_4xx = serializers.IntegerField()
    requests_5xx = serializers.IntegerField()


class UsageSerializer(serializers.Serializer[Any]):
    object = serializers.CharField(help_text="Always `usage`.")
    granularity = serializers.ChoiceField(choices=[usage.HOURLY, usage.DAILY])
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    key = serializers.CharField(allow_null=True)
    totals = UsageTotalsSerializer()
    results = UsageBucketSerializer(many=True)


class UsageApi(OrgApiView):
    """Request counts of the organisation's keys per hour or day."""

    resource = "usage"

    @extend_schema(
        parameters=[UsageFilterSerializer],
        responses=UsageSerializer,
        summary="Usage per key and hour or day",
        tags=["usage"],
    )
    def get(self, request: Request) -> Response:
        filters = UsageFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        # A test key knows nothing of live keys, not even their usage (ADR 0043).
        environment = Environment.TEST if self.principal.environment == Environment.TEST else None
        key_pk = None
        if data.get("key"):
            key_pk = selectors.usage_key_pk(org=self.org, public_id=data["key"])
            hidden = environment is not None and data["key"] not in set(
                selectors.apikey_public_ids(org=self.org, environment=environment)
            )
            if key_pk is None or hidden:
                raise ApiError("not_found", "No such API key.", param="key")
        buckets = selectors.usage_key_buckets(
            org=self.org,
            since=data["since"],
            until=data["until"],
            granularity=data["granularity"],
            key_pk=key_pk,
            environment=environment,
        )
        summed = selectors.UsageTotals.of(buckets)
        totals = {
            "requests": summed.requests,
            "requests_2xx": summed.count_2xx,
            "requests_4xx": summed.count_4xx,
            "requests_5xx": summed.count_5xx,
        }
        body = {
            "object": "usage",
            "granularity": data["granularity"],
            "since": data["since"],
            "until": data["until"],
            "key": data.get("key") or None,
            "totals": totals,
            "results": buckets,
        }
        return Response(UsageSerializer(body).data)
