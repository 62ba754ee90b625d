from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from dispatch.webhooks import einvoicing_webhook

urlpatterns = [
    path("", RedirectView.as_view(url="/billing/", permanent=False)),
    path("admin/", admin.site.urls),
    path("billing/", include("config.billing_urls")),
    # The language switcher of the accountants' pages posts here.
    path("i18n/", include("django.conf.urls.i18n")),
    path(
        "webhooks/einvoicing/<int:integration_id>/",
        einvoicing_webhook,
        name="einvoicing-webhook",
    ),
]
