"""KYC documents are recognised by their content, limited in size and number, and named
safely."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from platform_admin.documents import check_document, check_documents, sanitize_filename
from tests.platform_admin.conftest import jpeg_bytes, pdf_bytes, png_bytes, upload


@pytest.mark.parametrize(
    ("name", "content", "content_type", "filename"),
    [
        ("incorporation.pdf", pdf_bytes(), "application/pdf", "incorporation.pdf"),
        ("utility-bill.png", png_bytes(), "image/png", "utility-bill.png"),
        ("passport.jpeg", jpeg_bytes(), "image/jpeg", "passport.jpeg"),
        ("passport.JPG", jpeg_bytes(), "image/jpeg", "passport.jpg"),
    ],
)
def test_good_pdf_png_and_jpeg_are_accepted(
    name: str, content: bytes, content_type: str, filename: str
) -> None:
    checked = check_document(upload(name, content))
    assert checked.content_type == content_type
    assert checked.filename == filename
    assert checked.size == len(content)
    assert len(checked.sha256) == 64


def test_a_text_file_named_pdf_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        check_document(upload("passport.pdf", b"just some text, not a PDF at all\n"))
    assert info.value.code == "file_type"
    assert "not a PDF, PNG or JPEG" in info.value.messages[0]


def test_html_claiming_to_be_an_image_is_refused() -> None:
    with pytest.raises(ValidationError):
        check_document(upload("x.png", b"<html><script>alert(1)</script></html>", "image/png"))


def test_the_detected_type_decides_the_extension() -> None:
    checked = check_document(upload("scan.pdf", png_bytes()))
    assert checked.content_type == "image/png"
    assert checked.filename == "scan.png"


def test_an_oversize_file_is_refused(settings: Any) -> None:
    settings.KYC_DOCUMENT_MAX_BYTES = 1024
    with pytest.raises(ValidationError) as info:
        check_document(upload("big.pdf", b"%PDF-1.4\n" + b"0" * 2048))
    assert info.value.code == "file_too_large"
    assert check_document(upload("small.pdf", b"%PDF-1.4\n" + b"0" * 512)).size == 521


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(ValidationError):
        check_document(upload("empty.pdf", b""))


def test_at_least_one_and_at_most_the_limit_of_documents(settings: Any) -> None:
    settings.KYC_MAX_DOCUMENTS = 2
    with pytest.raises(ValidationError):
        check_documents([])
    files = [upload(f"d{i}.pdf", pdf_bytes()) for i in range(3)]
    with pytest.raises(ValidationError):
        check_documents(files)
    with pytest.raises(ValidationError):
        check_documents(files[:1], already=2)
    assert len(check_documents(files[:2])) == 2


def test_every_bad_file_is_reported() -> None:
    with pytest.raises(ValidationError) as info:
        check_documents([upload("a.pdf", b"text"), upload("b.pdf", b"more text")])
    assert len(info.value.messages) == 2


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("C:\\Users\\me\\Statuts société.pdf", "Statuts societe.pdf"),
        ('evil"; filename=x.html.pdf', "evil_ filename_x.html.pdf"),
        ("no-extension", "no-extension.pdf"),
        ("...pdf", "pdf.pdf"),
        ("", "document.pdf"),
        ("a\x00b\r\n.pdf", "a_b.pdf"),
        ("._", "document.pdf"),
    ],
)
def test_original_filenames_are_sanitised(given: str, expected: str) -> None:
    assert sanitize_filename(given, extension=".pdf") == expected
