"""The accountants' pages of the nightly run: configuration check, tonight, run history.

Every object is filtered by the user's establishments (`establishment_list_for_user`):
another establishment's run answers 404. These pages only read; the plans they show come
from the nightly run's own planner and write nothing.
"""

from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from establishments.models import Establishment
from establishments.selectors import establishment_list_for_user

from . import selectors
from .models import CONFIGURATION_REASONS, Run, SkipReason

RUNS_PER_PAGE = 25
# A run of a large establishment may hold thousands of dispatches: shown a page at a time.
DISPATCHES_PER_PAGE = 100
SKIPS_PER_PAGE = 100


def _chosen_establishments(
    request: HttpRequest, establishments
) -> tuple[list[Establishment], Establishment | None]:
    """The user's establishments, narrowed to `?establishment=<id>` when it is one of them."""
    establishments = list(establishments)
    chosen = None
    raw = request.GET.get("establishment", "")
    if raw.isdigit():
        chosen = next((e for e in establishments if e.pk == int(raw)), None)
    return establishments, chosen


def _reason_label(reason: str) -> str:
    try:
        return SkipReason(reason).label
    except ValueError:
        return reason


@login_required
@permission_required("debtors.view_debtoraccount", raise_exception=True)
def configuration_check(request: HttpRequest) -> HttpResponse:
    establishments, chosen = _chosen_establishments(
        request, establishment_list_for_user(user=request.user)
    )
    checks = selectors.configuration_check(
        establishments=[chosen] if chosen else establishments, now=timezone.now()
    )
    return render(
        request,
        "billing/checks.html",
        {
            "checks": [c for c in checks if c.auto_send],
            # Off and nothing pending: nothing to tell.
            "switched_off": [c for c in checks if not c.auto_send and c.pending_invoice_count],
            "establishments": establishments,
            "chosen": chosen,
        },
    )


@login_required
@permission_required("dispatch.view_run", raise_exception=True)
def run_preview(request: HttpRequest) -> HttpResponse:
    establishments, chosen = _chosen_establishments(
        request, establishment_list_for_user(user=request.user)
    )
    previews = selectors.run_preview(
        establishments=[chosen] if chosen else establishments, now=timezone.now()
    )
    return render(
        request,
        "billing/run_preview.html",
        {"previews": previews, "establishments": establishments, "chosen": chosen},
    )


@login_required
@permission_required("dispatch.view_run", raise_exception=True)
def run_list(request: HttpRequest) -> HttpResponse:
    establishments, chosen = _chosen_establishments(
        request, establishment_list_for_user(user=request.user)
    )
    runs = selectors.run_list(
        establishments=establishments, establishment_id=chosen.pk if chosen else None
    )
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    for run in page.object_list:
        run.skipped_rows = [
            (reason, _reason_label(reason), count, reason in CONFIGURATION_REASONS)
            for reason, count in sorted(
                (run.skipped_by_reason or {}).items(),
                key=lambda item: selectors.skip_reason_rank(item[0]),
            )
        ]
    return render(
        request,
        "billing/run_list.html",
        {
            "page": page,
            "establishments": establishments,
            "chosen": chosen,
            "show_establishment": len(establishments) > 1 and chosen is None,
        },
    )


@login_required
@permission_required("dispatch.view_run", raise_exception=True)
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        run = selectors.run_get(
            establishments=establishment_list_for_user(user=request.user), run_id=pk
        )
    except Run.DoesNotExist:
        raise Http404 from None
    dispatches = Paginator(selectors.run_dispatches(run=run), DISPATCHES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    skips = Paginator(selectors.run_skips(run=run), SKIPS_PER_PAGE).get_page(
        request.GET.get("skips_page")
    )
    return render(
        request,
        "billing/run_detail.html",
        {
            "run": run,
            "dispatches": dispatches,
            "skips": skips,
            "configuration_reasons": {str(r) for r in CONFIGURATION_REASONS},
        },
    )
