"""E-invoice lifecycle: statuses reported by platforms, applied to the outbox."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dispatch.connectors import connector_for
from dispatch.connectors.base import (
    ConfigurationError,
    ConnectorError,
    StatusUpdate,
    SubmitReceipt,
)
from dispatch.models import (
    Channel,
    Dispatch,
    DispatchEvent,
    DispatchStatus,
    EventKind,
    Integration,
    LifecycleCode,
    LifecycleEvent,
)
from invoicing.models import InvoiceStatus

logger = logging.getLogger(__name__)

# A platform rejection (213) means the invoice was not delivered: the dispatch says so.
REJECTION_CODES = {LifecycleCode.REJECTED}


@dataclass
class LifecycleRecorded:
    # Stored now or already in the history: safe to acknowledge to the platform.
    handled: list[StatusUpdate] = field(default_factory=list)
    # How many of them were new history rows.
    added: int = 0


@transaction.atomic
def lifecycle_record(
    *, integration: Integration, updates: Iterable[StatusUpdate], source: str
) -> LifecycleRecorded:
    """Append each update to its submission's history; say which were handled, how many new.

    Handled: stored now, or already in the history under the same event id (platforms
    that return the whole history on every poll, an inbox file read twice). Updates for
    unknown submissions or with unknown codes are logged and left out, so the caller does
    not acknowledge them to the platform.
    """
    valid_codes = set(LifecycleCode.values)
    result = LifecycleRecorded()
    for update in updates:
        if update.code not in valid_codes:
            logger.warning("integration %s: unknown status code %r", integration.pk, update.code)
            continue
        match = Q()
        if update.platform_ref:
            match |= Q(platform_ref=update.platform_ref)
        if update.tracking_id:
            match |= Q(tracking_id=update.tracking_id)
        if not match:
            continue
        dispatch = (
            Dispatch.objects.select_for_update()
            .filter(match, integration=integration, channel=Channel.EINVOICE)
            .first()
        )
        if dispatch is None:
            logger.warning(
                "integration %s: status %s for an unknown submission %r",
                integration.pk,
                update.code,
                update.platform_ref or update.tracking_id,
            )
            continue
        event_id = update.event_id[:200]
        if event_id and dispatch.lifecycle.filter(event_id=event_id).exists():
            result.handled.append(update)
            continue
        LifecycleEvent.objects.create(
            dispatch=dispatch,
            code=update.code,
            source=source,
            occurred_at=update.occurred_at,
            message=update.message[:2000],
            event_id=event_id,
        )
        dispatch.lifecycle_code = update.code
        fields = ["lifecycle_code", "updated_at"]
        if update.code in REJECTION_CODES and dispatch.status != DispatchStatus.REJECTED:
            dispatch.status = DispatchStatus.REJECTED
            dispatch.last_error = update.message[:2000] or LifecycleCode(update.code).label
            fields += ["status", "last_error"]
            DispatchEvent.objects.create(
                dispatch=dispatch, kind=EventKind.REJECTED, message=dispatch.last_error
            )
        dispatch.save(update_fields=fields)
        result.handled.append(update)
        result.added += 1
    return result


class IntegrationUnavailable(ConfigurationError):
    """The dispatch's integration was deactivated after planning: nothing is sent."""


def einvoice_deliver(*, dispatch: Dispatch) -> SubmitReceipt:
    """Build, validate and submit one e-invoice; raise what the sender must act on.

    After an earlier attempt ended in a timeout whose outcome is unknown, the platform is
    asked first whether it has the document, so that it is never submitted twice.
    """
    from dispatch.documents.einvoice import einvoice_build

    integration = dispatch.integration
    if integration is None or not integration.active:
        raise IntegrationUnavailable(
            f"integration {integration} is not active: the invoice was not submitted"
        )
    invoice = dispatch.items.select_related("invoice").get().invoice
    document = einvoice_build(
        invoice=invoice,
        document_format=integration.document_format,
        tracking_id=dispatch.tracking_id,
    )
    Dispatch.objects.filter(pk=dispatch.pk).update(document_sha256=document.sha256)
    connector = connector_for(integration)
    if dispatch.outcome_unknown:
        receipt = connector.find_submission(document, dispatch_id=dispatch.pk)
        DispatchEvent.objects.create(
            dispatch=dispatch,
            kind=EventKind.CHECKED,
            message=(
                f"the platform has it as {receipt.platform_ref}: not submitted again"
                if receipt
                else "the platform does not have it: submitting"
            ),
        )
        if receipt is not None:
            return receipt
    return connector.submit(document, dispatch_id=dispatch.pk)


# Statuses after which nothing more is expected from the platform.
FINAL_CODES = {LifecycleCode.REFUSED, LifecycleCode.CASHED, LifecycleCode.REJECTED}


def einvoice_poll(*, integration: Integration) -> int:
    """Read the platform's statuses for our open submissions; returns how many are new."""
    refs = list(
        Dispatch.objects.filter(
            integration=integration,
            channel=Channel.EINVOICE,
            status=DispatchStatus.SENT,
        )
        .exclude(lifecycle_code__in=FINAL_CODES)
        .exclude(platform_ref="")
        .values_list("platform_ref", flat=True)
    )
    connector = connector_for(integration)
    updates = connector.fetch_statuses(platform_refs=refs)
    recorded = lifecycle_record(
        integration=integration, updates=updates, source=LifecycleEvent.Source.POLL
    )
    # Acknowledged only once stored (committed), so nothing is lost if we stop between. A
    # failed acknowledgement leaves the file for the next poll, which stores it again
    # only as a repeated status.
    for update in recorded.handled:
        try:
            connector.acknowledge(update)
        except ConnectorError as exc:
            logger.warning("integration %s: acknowledgement failed: %s", integration.pk, exc)
    return recorded.added


def einvoice_report_cashed(*, invoice_id: int) -> int:
    """An invoice sent as an e-invoice is paid: tell the platforms that accept it (212)."""
    reported = 0
    dispatches = Dispatch.objects.select_related("integration").filter(
        channel=Channel.EINVOICE,
        status=DispatchStatus.SENT,
        items__invoice_id=invoice_id,
        items__invoice__status=InvoiceStatus.PAID,
    )
    for dispatch in dispatches.exclude(lifecycle_code=LifecycleCode.CASHED):
        connector = connector_for(dispatch.integration)
        if not connector.accepts_status_reports:
            continue
        connector.report_status(
            platform_ref=dispatch.platform_ref,
            tracking_id=dispatch.tracking_id,
            code=LifecycleCode.CASHED,
        )
        with transaction.atomic():
            LifecycleEvent.objects.create(
                dispatch=dispatch,
                code=LifecycleCode.CASHED,
                source=LifecycleEvent.Source.LOCAL,
                occurred_at=timezone.now(),
                message="invoice paid in full",
            )
            Dispatch.objects.filter(pk=dispatch.pk).update(
                lifecycle_code=LifecycleCode.CASHED, updated_at=timezone.now()
            )
        reported += 1
    return reported
