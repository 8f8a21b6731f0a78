from django.contrib import admin
from django.urls import include, path

from config import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("", include("accounts.urls")),
    path("api/v1/", include("apikeys.api_urls")),
    path("admin/", admin.site.urls),
]
