"""The accountants' pages, under /billing/ (namespace `billing`)."""

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from debtors import views as debtor_views
from dispatch import views as dispatch_views

app_name = "billing"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="billing:debtor_list"), name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="billing/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("debtors/", debtor_views.debtor_list, name="debtor_list"),
    path("debtors/<int:pk>/", debtor_views.debtor_detail, name="debtor_detail"),
    path("debtors/<int:pk>/letter.pdf", debtor_views.debtor_letter_preview, name="debtor_letter"),
    path("debtors/<int:pk>/send/", debtor_views.debtor_send_now, name="debtor_send_now"),
    path("debtors/<int:pk>/pause/", debtor_views.debtor_pause, name="debtor_pause"),
    path("debtors/<int:pk>/resume/", debtor_views.debtor_resume, name="debtor_resume"),
    path("invoices/<int:pk>/dispute/", debtor_views.invoice_dispute, name="invoice_dispute"),
    path("invoices/<int:pk>/undispute/", debtor_views.invoice_undispute, name="invoice_undispute"),
    path("checks/", dispatch_views.configuration_check, name="checks"),
    path("runs/", dispatch_views.run_list, name="run_list"),
    path("runs/preview/", dispatch_views.run_preview, name="run_preview"),
    path("runs/<int:pk>/", dispatch_views.run_detail, name="run_detail"),
]
