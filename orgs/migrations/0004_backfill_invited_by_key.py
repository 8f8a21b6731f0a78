"""Invitations sent by an API key before the key was recorded on them (0003) get it from
their `member.invited` audit event, so that revoking that key voids them too."""

from typing import Any

from django.db import migrations


def backfill(apps: Any, schema_editor: Any) -> None:
    Invitation = apps.get_model("orgs", "Invitation")
    AuditEvent = apps.get_model("orgs", "AuditEvent")
    ApiKey = apps.get_model("apikeys", "ApiKey")
    unknown = Invitation.objects.filter(
        invited_by__isnull=True,
        invited_by_key__isnull=True,
        accepted_at__isnull=True,
        cancelled_at__isnull=True,
    )
    for invitation in unknown.iterator():
        event = (
            AuditEvent.objects.filter(
                org_id=invitation.org_id,
                action="member.invited",
                actor_type="api_key",
                target_id=invitation.public_id,
            )
            .order_by("created_at")
            .first()
        )
        if event is None:
            continue
        key = ApiKey.objects.filter(public_id=event.actor_id).first()
        if key is not None:
            Invitation.objects.filter(pk=invitation.pk).update(invited_by_key=key)


class Migration(migrations.Migration):
    dependencies = [("orgs", "0003_invitation_key")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
