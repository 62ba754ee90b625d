"""Status callbacks from e-invoicing platforms: authenticated, replays ignored, stored."""

import logging
from collections.abc import Mapping

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from dispatch.connectors import ConfigurationError, WebhookRejected, connector_for
from dispatch.einvoicing import lifecycle_record
from dispatch.models import Integration, LifecycleEvent, WebhookEvent

logger = logging.getLogger(__name__)

# The only reasons told to the caller of a refused webhook; anything else stays in the log.
PUBLIC_REJECTIONS = {"invalid signature", "stale timestamp"}


def webhook_receive(
    *, integration: Integration, body: bytes, headers: Mapping[str, str]
) -> dict[str, int]:
    """Authenticate a callback, drop replayed events, store the statuses of the others.

    Returns {"stored": n, "ignored": replays, "unmatched": events for no known submission or
    with an unknown status}. Unmatched events are not remembered as processed, so the
    platform's redelivery gets another chance once the submission is known.
    Raises WebhookRejected (not authentic, too old, malformed).
    """
    updates = connector_for(integration).parse_webhook(body=body, headers=headers)
    if any(not update.event_id for update in updates):
        # Without an event id a replay cannot be told from a new event.
        raise WebhookRejected("malformed body: an event has no id")
    with transaction.atomic():
        fresh = []
        ignored = 0
        for update in updates:
            # get_or_create on the unique (integration, event_id): of two concurrent
            # deliveries of one event, the second waits for the first and sees it.
            event, created = WebhookEvent.objects.get_or_create(
                integration=integration,
                event_id=update.event_id,
                defaults={
                    "payload": {
                        "code": update.code,
                        "platform_ref": update.platform_ref,
                        "tracking_id": update.tracking_id,
                        "occurred_at": (
                            update.occurred_at.isoformat() if update.occurred_at else None
                        ),
                        "message": update.message,
                    }
                },
            )
            if created:
                fresh.append((event, update))
            else:
                ignored += 1
        recorded = lifecycle_record(
            integration=integration,
            updates=[update for _, update in fresh],
            source=LifecycleEvent.Source.WEBHOOK,
        )
        stored_ids = {update.event_id for update in recorded.handled}
        unmatched = [event.pk for event, update in fresh if update.event_id not in stored_ids]
        WebhookEvent.objects.filter(pk__in=unmatched).delete()
    return {"stored": len(recorded.handled), "ignored": ignored, "unmatched": len(unmatched)}


@csrf_exempt
@require_POST
def einvoicing_webhook(request: HttpRequest, integration_id: int) -> JsonResponse:
    integration = get_object_or_404(Integration, pk=integration_id, active=True)
    try:
        result = webhook_receive(
            integration=integration, body=request.body, headers=request.headers
        )
    except WebhookRejected as exc:
        reason = str(exc)
        logger.warning("integration %s: webhook refused: %s", integration.pk, reason)
        if reason in PUBLIC_REJECTIONS:
            return JsonResponse({"error": reason}, status=401)
        return JsonResponse({"error": "malformed payload"}, status=400)
    except ConfigurationError:
        logger.warning("integration %s: webhook for a provider without webhooks", integration.pk)
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse(result)
