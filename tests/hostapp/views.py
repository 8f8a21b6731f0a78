"""The operator's own endpoints, guarded by Latchkey keys through `apikeys.public`."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.public import ApiError, OrgApiView, principal

PAYMENT = inline_serializer(
    "HostPayment",
    {"id": serializers.CharField(), "amount": serializers.IntegerField()},
)


class PaymentListApi(OrgApiView):
    """Payments of the key's organisation."""

    resource = "payments"

    @extend_schema(responses=PAYMENT, summary="List payments")
    def get(self, request: Request) -> Response:
        key = principal(request)
        return Response(
            {
                "org": key.org_public_id,
                "key": key.public_id,
                "actor": self.external_actor_id,
                "results": [],
            }
        )

    @extend_schema(request=PAYMENT, responses={201: PAYMENT}, summary="Create a payment")
    def post(self, request: Request) -> Response:
        amount = request.data.get("amount") if isinstance(request.data, dict) else None
        if not isinstance(amount, int) or amount <= 0:
            raise ApiError("validation_error", "amount must be a positive integer.", param="amount")
        return Response({"id": f"pay_{amount}", "amount": amount}, status=201)


class InvoiceSendApi(OrgApiView):
    """Send an invoice: a custom action of the catalogue's `invoices` resource."""

    resource = "invoices"
    actions = {"POST": "execute"}

    @extend_schema(request=None, responses={200: PAYMENT}, summary="Send an invoice")
    def post(self, request: Request, invoice_id: str) -> Response:
        return Response({"id": invoice_id, "amount": 0})
