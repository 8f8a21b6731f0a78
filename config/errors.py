"""The one base of every refused service call (docs/product.md).

Every app's refusals (`OrgError`, `PlatformError`, `WebhookError`, `ApiKeyError`,
`AccountError`) are `ServiceError`s: a stable `code` (the reason, such as `last_owner`),
a `message` fit to show the person who asked, the `param` (input) at fault if any, and
`extra` fields for the API's error body. The API maps them in one place
(`apikeys.exceptions`: the reason to an error code of `apikeys.errors.ERRORS`, the body
fields); the dashboard shows `message`. A refusal of several inputs at once (a KYC
application, plan and limit changes) is an `InvalidFields`: every field's messages, which
the API lists in `errors` and a dashboard form puts on its fields.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A refused operation of a service. `str(error)` and `message` are the sentence to
    show; `code` is the stable reason; `param` names the input at fault."""

    code = "invalid"
    # Whether `code` is a reason of the service's own (sent as `reason` beside the API's
    # error code) rather than an API error code itself (`ApiKeyError`).
    code_is_reason = True

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.param = param
        # More fields of the API's error body (e.g. the successor of a rotated key).
        self.extra = dict(extra or {})

    @property
    def message(self) -> str:
        return str(self)


class InvalidFields(ServiceError):
    """Several inputs refused at once: `fields` maps each input to its messages (in the
    order they were checked). The API answers 400 `validation_error` listing every one;
    a dashboard form puts each message on its field."""

    code = "validation_error"
    code_is_reason = False

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = {name: list(found) for name, found in fields.items() if found}
        if not self.fields:
            raise ValueError("InvalidFields needs at least one field's message.")
        param, found = next(iter(self.fields.items()))
        super().__init__(found[0], param=param)

    @property
    def messages(self) -> list[str]:
        return [message for found in self.fields.values() for message in found]
