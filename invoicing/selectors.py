from django.db.models import OuterRef, Subquery


def invoice_einvoice_status_subquery() -> Subquery:
    """The lifecycle code of the invoice's latest e-invoice submission, for `annotate()`.

    An invoice is submitted once per integration; after a change of integration the newest
    submission is the one that matters.
    """
    from dispatch.models import Channel, Dispatch

    latest = (
        Dispatch.objects.filter(items__invoice=OuterRef("pk"), channel=Channel.EINVOICE)
        .exclude(lifecycle_code="")
        .order_by("-created_at", "-id")
        .values("lifecycle_code")[:1]
    )
    return Subquery(latest)
