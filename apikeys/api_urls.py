from django.urls import include, path

from apikeys import api

urlpatterns = [
    path("ping", api.PingApi.as_view(), name="api-ping"),
    path("", include("platform_admin.api_urls")),
]
