"""A host urlconf with a view whose action the catalogue lacks: `manage.py check` refuses it."""

from typing import Any

from django.urls import path
from rest_framework.response import Response

from apikeys.public import OrgApiView


class RefundApi(OrgApiView):
    resource = "payments"
    actions = {"POST": "refund"}

    def post(self, request: Any) -> Response:
        return Response({})


urlpatterns = [path("refunds", RefundApi.as_view())]
