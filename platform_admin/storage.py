"""Private file storage for KYC documents.

Files live under `settings.PRIVATE_MEDIA_ROOT`, which is outside STATIC_ROOT and has no
URL: they reach a browser only through the authorised download views. The location is
read from settings on every use, so tests (and operators) can move it.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.utils.deconstruct import deconstructible


@deconstructible(path="platform_admin.storage.PrivateStorage")
class PrivateStorage(FileSystemStorage):
    def __init__(self) -> None:
        # Owner-only permissions: nothing else on the host needs to read these files.
        super().__init__(file_permissions_mode=0o600, directory_permissions_mode=0o700)

    @property
    def base_location(self) -> str:
        return str(settings.PRIVATE_MEDIA_ROOT)

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    def url(self, name: str | None) -> str:
        raise ValueError("Private files have no URL; serve them through an authorised view.")


def private_storage() -> PrivateStorage:
    return PrivateStorage()
