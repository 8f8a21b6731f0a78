"""Sessions stored by Django's own engine (the key in clear, 32 characters) are moved
under the digest of their key (`accounts.session_store`): nobody is signed out, and no
usable session cookie is left in the table or its backups."""

import hashlib
from typing import Any

from django.db import migrations
from django.db.models.functions import Length


def move_under_digests(apps: Any, schema_editor: Any) -> None:
    Session = apps.get_model("sessions", "Session")
    clear = Session.objects.annotate(n=Length("session_key")).exclude(n=40)
    while True:
        batch = list(clear.order_by("session_key")[:500])
        if not batch:
            return
        Session.objects.bulk_create(
            [
                Session(
                    session_key=hashlib.sha256(row.session_key.encode()).hexdigest()[:40],
                    session_data=row.session_data,
                    expire_date=row.expire_date,
                )
                for row in batch
            ],
            ignore_conflicts=True,
        )
        Session.objects.filter(session_key__in=[row.session_key for row in batch]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sessions", "0001_initial"),
        ("accounts", "0004_user_sessions"),
    ]

    operations = [migrations.RunPython(move_under_digests, migrations.RunPython.noop)]
