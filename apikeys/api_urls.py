from django.urls import path

from apikeys import api

urlpatterns = [
    path("ping", api.PingApi.as_view(), name="api-ping"),
]
