from django.db.models import OuterRef, QuerySet, Subquery

from establishments.models import Establishment


def integration_list_for_send_mode(*, establishment: Establishment | None = None) -> QuerySet:
    """Active integrations a debtor may be sent through (all establishments' when None)."""
    from dispatch.models import Integration

    integrations = Integration.objects.filter(active=True).select_related("establishment")
    if establishment is not None:
        integrations = integrations.filter(establishment=establishment)
    return integrations.order_by("establishment__name", "name", "pk")


def debtor_einvoice_status_subquery() -> Subquery:
    """The lifecycle code of the debtor's latest e-invoice with one, for `annotate()`.

    One subquery in the list's SQL instead of a query per row.
    """
    from dispatch.models import Channel, Dispatch

    latest = (
        Dispatch.objects.filter(debtor=OuterRef("pk"), channel=Channel.EINVOICE)
        .exclude(lifecycle_code="")
        .order_by("-created_at", "-id")
        .values("lifecycle_code")[:1]
    )
    return Subquery(latest)
