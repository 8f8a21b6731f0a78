"""What the pipeline notes about one request, in one typed place.

Every door keeps its per-request state here instead of loose attributes on the request:
the request usage counts (the gateway's original request, or the request itself), the
validated client headers and the admission. The notes hang on the Django request under
one attribute; `notes(request)` accepts a DRF request too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apikeys.guard.pipeline import Admission

_ATTRIBUTE = "latchkey_notes"


@dataclass(slots=True)
class Notes:
    # The admission of the request's key (None before the pipeline ran, or for a public
    # endpoint).
    admission: Admission | None = None


def notes(request: Any) -> Notes:
    """The notes of `request` (a Django or DRF request), made on first use."""
    django_request = getattr(request, "_request", request)
    found: Notes | None = django_request.__dict__.get(_ATTRIBUTE)
    if found is None:
        found = Notes()
        django_request.__dict__[_ATTRIBUTE] = found
    return found
