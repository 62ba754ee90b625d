from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from dispatch.webhooks import einvoicing_webhook

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path(
        "webhooks/einvoicing/<int:integration_id>/",
        einvoicing_webhook,
        name="einvoicing-webhook",
    ),
]
