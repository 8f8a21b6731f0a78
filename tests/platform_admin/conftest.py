"""Fixtures for the KYC and platform console tests: private storage in a temporary
directory, sample documents, a platform owner."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import PlatformRole, User
from orgs.actors import Actor
from orgs.models import Organization
from platform_admin import services
from platform_admin.documents import one_page_pdf
from platform_admin.models import KycApplication
from tests.conftest import verified_client
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _private_media(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "private"
    settings.PRIVATE_MEDIA_ROOT = root
    return root


def pdf_bytes(text: str = "Certificate of incorporation") -> bytes:
    """A small but well-formed one-page PDF."""
    return one_page_pdf(text)


def png_bytes() -> bytes:
    """A valid 1x1 white PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\xff\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def jpeg_bytes() -> bytes:
    """The first bytes of a JFIF JPEG (type detection reads the signature)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64


def upload(name: str, content: bytes, content_type: str = "application/pdf") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


KYC_DATA = {
    "legal_name": "Acme Corporation Ltd",
    "registration_number": "RC-123456",
    "country": "GB",
    "address": "1 High Street\nLondon EC1A 1AA",
    "director_name": "Wile E. Coyote",
}


def submit(org: Organization, user: User | None, **overrides: Any) -> KycApplication:
    data: dict[str, Any] = {**KYC_DATA, **overrides}
    data.setdefault("documents", [upload("incorporation.pdf", pdf_bytes())])
    actor = Actor.for_user(user) if user is not None else Actor.system()
    return services.kyc_submit(org=org, actor=actor, **data)


@pytest.fixture
def platform_owner(db: None) -> User:
    return UserFactory.create(email="root@latchkey.test", platform_role=PlatformRole.PLATFORM_OWNER)


@pytest.fixture
def owner_staff_client(platform_owner: User) -> Client:
    return verified_client(platform_owner)
