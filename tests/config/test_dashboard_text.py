"""The dashboard's words: event sentences, one full stop, grouped numbers, aria-current."""

from __future__ import annotations

from django.template import Context, Template
from django.test import RequestFactory

from config.text import EVENT_SENTENCES, end_sentence, event_sentence


def render(source: str, **context: object) -> str:
    return Template("{% load dashboard %}" + source).render(Context(context))


def test_event_codes_read_as_sentences_and_unknown_ones_from_their_code() -> None:
    assert event_sentence("api_key.created") == "Created an API key"
    assert event_sentence("webhook.endpoint_added") == "Webhook: endpoint added"
    assert all(text[0].isupper() and not text.endswith(".") for text in EVENT_SENTENCES.values())


def test_a_name_ends_a_sentence_with_one_full_stop() -> None:
    assert end_sentence("Demo Inc.") == "Demo Inc."
    assert end_sentence("Acme") == "Acme."
    assert render("{{ name|end_sentence }}", name="Demo Inc.") == "Demo Inc."


def test_numbers_are_grouped() -> None:
    assert render("{{ n|number }} a month", n=100000) == "100,000 a month"
    assert render("{{ n|number }}", n=None) == ""


def test_an_ipv6_address_breaks_only_at_its_colons_and_is_escaped() -> None:
    assert render('{{ ip|break_at:":" }}', ip="2001:db8::1") == "2001:<wbr>db8:<wbr>:<wbr>1"
    assert "<b>" not in render('{{ ip|break_at:":" }}', ip="<b>:x")


def test_aria_current_marks_the_page_and_sections_below_it() -> None:
    request = RequestFactory().get("/o/acme/api-keys/key_1/")
    source = '<a{% aria_current href %}></a><a{% aria_current "/o/acme/" exact=True %}></a>'
    html = render(source, request=request, href="/o/acme/api-keys/")
    assert html == '<a aria-current="page"></a><a></a>'
