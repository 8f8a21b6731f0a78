"""KYC document checks: type by content (magic bytes), size, count, and a safe name.

A file's name and the browser's claimed content type are never trusted: a text file named
`passport.pdf` is refused. Accepted types and their signatures:

- PDF: `%PDF-`
- PNG: `89 50 4E 47 0D 0A 1A 0A`
- JPEG: `FF D8 FF`
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from django.conf import settings
from django.core.exceptions import ValidationError

# (signature, content type, canonical extension, other accepted extensions)
SIGNATURES: tuple[tuple[bytes, str, str, tuple[str, ...]], ...] = (
    (b"%PDF-", "application/pdf", ".pdf", ()),
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png", ()),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg", (".jpeg",)),
)
ACCEPT_ATTRIBUTE = "application/pdf,image/png,image/jpeg,.pdf,.png,.jpg,.jpeg"
FILENAME_MAX_LENGTH = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


class Upload(Protocol):
    """What Django's UploadedFile offers and the checks need."""

    name: str | None
    size: int | None

    def seek(self, offset: int, whence: int = ...) -> int: ...
    def read(self, size: int = ...) -> bytes: ...


@dataclass(frozen=True)
class CheckedDocument:
    file: IO[bytes]
    filename: str  # sanitised, with the extension of the detected type
    content_type: str
    size: int
    sha256: str


def max_bytes() -> int:
    return int(settings.KYC_DOCUMENT_MAX_BYTES)


def max_documents() -> int:
    return int(settings.KYC_MAX_DOCUMENTS)


def human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")
    if size >= 1024:
        return f"{size // 1024} KB"
    return f"{size} bytes"


def detect_type(head: bytes) -> tuple[str, str, tuple[str, ...]] | None:
    """(content type, canonical extension, other extensions) for the first bytes, or None."""
    for signature, content_type, extension, others in SIGNATURES:
        if head.startswith(signature):
            return content_type, extension, others
    return None


def safe_basename(name: str | None) -> str:
    """The last path component, reduced to ASCII letters, digits, space, `.`, `_`, `-`."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    return _UNSAFE.sub("_", base).strip(" ._-")[:FILENAME_MAX_LENGTH]


def sanitize_filename(name: str | None, *, extension: str, others: Sequence[str] = ()) -> str:
    """A display and download name: no directories, no control or exotic characters, the
    extension of the detected type (kept as given when it is an accepted alias)."""
    stem, dot, ext = safe_basename(name).rpartition(".")
    if not dot:
        stem, ext = ext, ""
    ext = f".{ext.lower()}" if ext else ""
    stem = stem.strip(" ._-")[: FILENAME_MAX_LENGTH - 5] or "document"
    suffix = ext if ext in (extension, *others) else extension
    return f"{stem}{suffix}"


def check_document(upload: Upload) -> CheckedDocument:
    """Validate one uploaded file. Raises ValidationError with a message for the user."""
    label = safe_basename(upload.name) or "A file"
    limit = max_bytes()
    upload.seek(0)
    hasher = hashlib.sha256()
    size = 0
    head = b""
    while True:
        chunk = upload.read(64 * 1024)
        if not chunk:
            break
        if not head:
            head = chunk[:16]
        size += len(chunk)
        if size > limit:
            raise ValidationError(
                f"{label} is larger than {human_size(limit)}.", code="file_too_large"
            )
        hasher.update(chunk)
    upload.seek(0)
    if size == 0:
        raise ValidationError(f"{label} is empty.", code="file_empty")
    detected = detect_type(head)
    if detected is None:
        raise ValidationError(
            f"{label} is not a PDF, PNG or JPEG file (checked by its content, not its name).",
            code="file_type",
        )
    content_type, extension, others = detected
    return CheckedDocument(
        file=upload,  # type: ignore[arg-type]
        filename=sanitize_filename(upload.name, extension=extension, others=others),
        content_type=content_type,
        size=size,
        sha256=hasher.hexdigest(),
    )


def check_documents(uploads: Sequence[Upload], *, already: int = 0) -> list[CheckedDocument]:
    """Validate a set of uploads; `already` counts documents carried over from before.

    Every problem is reported at once (one message per bad file).
    """
    total = len(uploads) + already
    if total == 0:
        raise ValidationError("Attach at least one document.", code="documents_required")
    if total > max_documents():
        raise ValidationError(
            f"Attach at most {max_documents()} documents.", code="too_many_documents"
        )
    checked: list[CheckedDocument] = []
    errors: list[ValidationError] = []
    for upload in uploads:
        try:
            checked.append(check_document(upload))
        except ValidationError as exc:
            errors.append(exc)
    if errors:
        raise ValidationError(errors)
    return checked


def one_page_pdf(title: str) -> bytes:
    """A one-page PDF showing `title`, well-formed enough for any viewer: the demo data's
    KYC documents (and the tests')."""
    stream = f"BT /F1 18 Tf 50 750 Td ({title}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
