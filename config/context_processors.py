from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def shell(request: HttpRequest) -> dict[str, Any]:
    """What the page shell needs on every page: the product name and the current org."""
    return {
        "product_name": "Latchkey",
        "current_org": getattr(request, "org", None),
        "current_membership": getattr(request, "membership", None),
    }
