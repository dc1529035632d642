from django.urls import path

from . import views

app_name = "microsoft"
urlpatterns = [
    path("", views.settings_page, name="settings"),
    path("connect/", views.connect, name="connect"),
    # ALLOWED_RETURN_URLS on the connector must allow this URL.
    path("return/", views.connect_return, name="return"),
    path("disconnect/", views.disconnect, name="disconnect"),
]
