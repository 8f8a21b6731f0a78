from django.urls import path

from tests.hostapp import views

urlpatterns = [
    path("payments", views.PaymentListApi.as_view(), name="host-payments"),
    path("invoices/<str:invoice_id>/send", views.InvoiceSendApi.as_view(), name="host-send"),
]
