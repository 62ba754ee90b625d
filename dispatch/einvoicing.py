"""E-invoice lifecycle: statuses reported by platforms, applied to the outbox."""

import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q

from dispatch.connectors.base import StatusUpdate
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

logger = logging.getLogger(__name__)

# A platform rejection (213) means the invoice was not delivered: the dispatch says so.
REJECTION_CODES = {LifecycleCode.REJECTED}


@transaction.atomic
def lifecycle_record(
    *, integration: Integration, updates: Iterable[StatusUpdate], source: str
) -> list[StatusUpdate]:
    """Append each update to its submission's history; return those that were stored.

    Updates for unknown submissions or with unknown codes are logged and left out, so the
    caller does not acknowledge them to the platform.
    """
    valid_codes = set(LifecycleCode.values)
    stored: list[StatusUpdate] = []
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
        LifecycleEvent.objects.create(
            dispatch=dispatch,
            code=update.code,
            source=source,
            occurred_at=update.occurred_at,
            message=update.message[:2000],
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
        stored.append(update)
    return stored
