"""The accountants' debtor pages: search, detail and the actions on one account.

Every object is looked up among the establishments of the user
(`establishment_list_for_user`): another establishment's id answers 404. The small action
forms (send now, pause, resume, dispute) redirect back to the detail with a success or an
error message; the settings form re-renders the detail page with its field errors.
"""

import datetime as dt
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, F, Q, Sum
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST

from debtors import services as debtor_services
from debtors.forms import EINVOICING_PREFIX, DebtorSendModeForm
from debtors.models import DebtorAccount, SendMode
from debtors.selectors import (
    debtor_aging,
    debtor_change_history,
    debtor_dispatch_history,
    debtor_einvoice_status_subquery,
    debtor_list_annotated,
    debtor_local_date,
    debtor_pending_invoices,
)
from debtors.services import DebtorError, debtor_set_send_mode
from establishments.selectors import establishment_list_for_user
from invoicing.models import ZERO, Invoice, InvoiceStatus
from invoicing.services import InvoicingError, invoice_clear_dispute, invoice_mark_disputed

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50
# ?sort= value -> ORDER BY; the primary key last so that pages never overlap.
SORTS = {
    "name": ("name", "pk"),
    "-name": ("-name", "-pk"),
    "total_due": ("total_due", "name", "pk"),
    "-total_due": ("-total_due", "name", "pk"),
    "oldest_due": (F("oldest_due_date").asc(nulls_last=True), "name", "pk"),
    "-oldest_due": (F("oldest_due_date").desc(nulls_last=True), "name", "pk"),
}
DEFAULT_SORT = "name"


# --- list --------------------------------------------------------------------------------


class DebtorFilterForm(forms.Form):
    q = forms.CharField(label=_("Search"), required=False, max_length=200)
    establishment = forms.TypedChoiceField(
        label=_("establishment"), required=False, coerce=int, empty_value=None
    )
    send_mode = forms.ChoiceField(label=_("send mode"), required=False)
    pending = forms.BooleanField(label=_("Has pending invoices"), required=False)
    misconfigured = forms.BooleanField(label=_("Misconfigured"), required=False)
    paused = forms.BooleanField(label=_("Paused"), required=False)

    def __init__(self, *args, establishments: list, integrations: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["establishment"].choices = [("", _("All"))] + [
            (e.pk, e.name) for e in establishments
        ]
        several = len(establishments) > 1
        self.fields["send_mode"].choices = [
            ("", _("All")),
            (SendMode.NONE.value, SendMode.NONE.label),
            (SendMode.EMAIL.value, SendMode.EMAIL.label),
        ] + [
            (
                f"{EINVOICING_PREFIX}{i.pk}",
                f"{i.name} ({i.establishment.name})" if several else i.name,
            )
            for i in integrations
        ]


def _filtered_debtors(form: DebtorFilterForm, debtors):
    data = form.cleaned_data
    if q := data.get("q", "").strip():
        debtors = debtors.filter(
            Q(name__icontains=q) | Q(account_number__icontains=q) | Q(contact_email__icontains=q)
        )
    if data.get("establishment"):
        debtors = debtors.filter(establishment_id=data["establishment"])
    send_mode = data.get("send_mode") or ""
    if send_mode.startswith(EINVOICING_PREFIX):
        debtors = debtors.filter(
            send_mode=SendMode.EINVOICING,
            integration_id=int(send_mode.removeprefix(EINVOICING_PREFIX)),
        )
    elif send_mode:
        debtors = debtors.filter(send_mode=send_mode)
    if data.get("pending"):
        debtors = debtors.filter(pending_count__gt=0)
    if data.get("misconfigured"):
        debtors = debtors.exclude(misconfig_reason="")
    if data.get("paused"):
        debtors = debtors.filter(misconfig_reason="paused")
    return debtors


def _page_size(request) -> int:
    try:
        size = int(request.GET.get("size", DEFAULT_PAGE_SIZE))
    except ValueError:
        return DEFAULT_PAGE_SIZE
    return size if size in PAGE_SIZES else DEFAULT_PAGE_SIZE


@login_required
@permission_required("debtors.view_debtoraccount", raise_exception=True)
@require_GET
def debtor_list(request):
    """Search and filter the debtors of the user's establishments.

    A fixed number of queries whatever the page size: the rows and their amounts come from
    one query, the count and the total of the filtered set from another.
    """
    from dispatch.models import Integration

    establishments = list(establishment_list_for_user(user=request.user).order_by("name"))
    integrations = list(
        Integration.objects.filter(establishment__in=establishments)
        .select_related("establishment")
        .order_by("establishment__name", "name")
    )
    form = DebtorFilterForm(
        request.GET or None, establishments=establishments, integrations=integrations
    )
    debtors = debtor_list_annotated(establishments=establishments)
    if form.is_bound and form.is_valid():
        debtors = _filtered_debtors(form, debtors)
    sort = request.GET.get("sort", DEFAULT_SORT)
    if sort not in SORTS:
        sort = DEFAULT_SORT
    debtors = debtors.order_by(*SORTS[sort])

    # One query for both figures; the paginator is given the count instead of asking again.
    # One query for the count and the totals, by currency: establishments may bill in
    # different ones. Aliases differ from the annotations: Django cannot aggregate
    # `total_due` into a result also named `total_due` ("column does not exist").
    totals = list(
        debtors.order_by()
        .values("establishment__currency")
        .annotate(found=Count("pk"), due=Sum("total_due"))
        .order_by("establishment__currency")
    )
    count = sum(row["found"] for row in totals)
    size = _page_size(request)
    paginator = Paginator(debtors, size)
    # Given, so that the paginator does not count again.
    paginator.count = count
    page = paginator.get_page(request.GET.get("page"))

    from dispatch.models import LifecycleCode, SkipReason

    for debtor in page.object_list:
        debtor.misconfig_label = (
            SkipReason(debtor.misconfig_reason).label if debtor.misconfig_reason else ""
        )
        debtor.einvoice_label = (
            LifecycleCode(debtor.einvoice_status).label if debtor.einvoice_status else ""
        )

    params = {k: v for k, v in request.GET.items() if k not in ("page", "sort", "size") and v}
    columns = [
        ("name", _("Name")),
        ("total_due", _("Total due")),
        ("oldest_due", _("Oldest due date")),
    ]
    sort_links = {}
    for key, _label in columns:
        # First click sorts names A-Z, amounts and ages with the largest/oldest first.
        default = key if key in ("name", "oldest_due") else f"-{key}"
        target = (key if sort == f"-{key}" else f"-{key}") if sort.lstrip("-") == key else default
        sort_links[key] = {
            "url": "?" + urlencode({**params, "sort": target, "size": size}),
            "active": sort.lstrip("-") == key,
            "descending": sort.startswith("-"),
        }
    return render(
        request,
        "billing/debtor_list.html",
        {
            "form": form,
            "page": page,
            "paginator": paginator,
            "count": count,
            "totals": [
                {"currency": row["establishment__currency"], "due": row["due"] or ZERO}
                for row in totals
            ],
            "sort": sort,
            "sort_links": sort_links,
            "page_query": urlencode({**params, "sort": sort}),
            "page_sizes": PAGE_SIZES,
            "size": size,
            "several_establishments": len(establishments) > 1,
        },
    )


# --- detail ------------------------------------------------------------------------------


def _debtor_for(request, pk: int) -> DebtorAccount:
    debtors = DebtorAccount.objects.filter(
        establishment__in=establishment_list_for_user(user=request.user)
    ).select_related("establishment", "integration")
    return get_object_or_404(debtors, pk=pk)


def _invoice_for(request, pk: int) -> Invoice:
    invoices = Invoice.objects.filter(
        establishment__in=establishment_list_for_user(user=request.user)
    ).select_related("debtor")
    return get_object_or_404(invoices, pk=pk)


class PauseForm(forms.Form):
    until = forms.DateField(
        label=_("Pause reminders until"), widget=forms.DateInput(attrs={"type": "date"})
    )
    reason = forms.CharField(label=_("Reason"), max_length=255)

    def __init__(self, *args, today: dt.date, **kwargs):
        super().__init__(*args, **kwargs)
        self.today = today
        self.fields["until"].widget.attrs["min"] = (today + dt.timedelta(days=1)).isoformat()

    def clean_until(self):
        until = self.cleaned_data["until"]
        if until <= self.today:
            raise ValidationError(_("Choose a date in the future."))
        return until

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise ValidationError(_("This field is required."))
        return reason


class DisputeForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=255)


def _save_settings(request, debtor: DebtorAccount) -> DebtorSendModeForm | None:
    """Apply the settings form through the service; the form with its errors when refused."""
    if not request.user.has_perm("debtors.change_debtoraccount"):
        raise PermissionDenied
    form = DebtorSendModeForm(request.POST, instance=debtor)
    if not form.is_valid():
        return form
    try:
        debtor_set_send_mode(
            debtor=debtor,
            send_mode=form.cleaned_data["send_mode"],
            integration=form.instance.integration,
            contact_email=form.cleaned_data.get("contact_email") or "",
            einvoicing_id=form.cleaned_data.get("einvoicing_id") or "",
        )
    except ValidationError as exc:
        # Something changed between the form's check and the save (an integration switched
        # off meanwhile): the same rules, reported the same way.
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return form
    messages.success(request, _("The account's settings were saved."))
    return None


@login_required
@permission_required("debtors.view_debtoraccount", raise_exception=True)
def debtor_detail(request, pk: int):
    debtor = _debtor_for(request, pk)
    if request.method == "POST":
        form = _save_settings(request, debtor)
        if form is None:
            return redirect("billing:debtor_detail", pk=debtor.pk)
        # The instance was changed by the form's validation: show the page from the database.
        debtor = _debtor_for(request, pk)
        status = 200
    elif request.method == "GET":
        form = DebtorSendModeForm(instance=debtor)
        status = 200
    else:
        return HttpResponse(status=405)
    on = debtor_local_date(establishment=debtor.establishment)
    lines = debtor_pending_invoices(debtor=debtor, on=on)
    disputed = Invoice.objects.filter(
        debtor=debtor, disputed=True, status=InvoiceStatus.OPEN
    ).order_by("due_date", "number")
    einvoice_status = (
        DebtorAccount.objects.filter(pk=debtor.pk)
        .annotate(status=debtor_einvoice_status_subquery())
        .values_list("status", flat=True)
        .first()
    )
    from dispatch.models import LifecycleCode

    context = {
        "debtor": debtor,
        "form": form,
        "on": on,
        "lines": lines,
        "totals": {
            "total": sum((line.invoice.gross_total for line in lines), ZERO),
            "paid": sum((line.amount_paid for line in lines), ZERO),
            "due": sum((line.amount_due for line in lines), ZERO),
            "overdue": sum((line.amount_due for line in lines if line.is_overdue), ZERO),
        },
        "disputed": list(disputed),
        "aging": debtor_aging(debtor=debtor, on=on),
        "dispatches": debtor_dispatch_history(debtor=debtor),
        "history": debtor_change_history(debtor=debtor),
        "einvoice_status": einvoice_status,
        "einvoice_status_label": LifecycleCode(einvoice_status).label if einvoice_status else "",
        "is_paused": debtor.paused_until is not None and debtor.paused_until >= on,
        "pause_form": PauseForm(today=on),
        "can_change": request.user.has_perm("debtors.change_debtoraccount"),
        "can_dispute": request.user.has_perm("invoicing.change_invoice"),
        "can_send": request.user.has_perm("dispatch.add_dispatch"),
    }
    return render(request, "billing/debtor_detail.html", context, status=status)


@login_required
@permission_required("debtors.view_debtoraccount", raise_exception=True)
@require_GET
def debtor_letter_preview(request, pk: int):
    """The letter the next run would send, as a PDF shown in the browser."""
    from dispatch.documents.letter import letter_data_for_debtor, letter_filename, letter_render_pdf

    debtor = _debtor_for(request, pk)
    data = letter_data_for_debtor(
        debtor=debtor, business_date=debtor_local_date(establishment=debtor.establishment)
    )
    if data is None:
        raise Http404(_("Nothing is pending: there is no letter to preview."))
    response = HttpResponse(letter_render_pdf(data=data), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{letter_filename(data=data)}"'
    return response


def _send_now_message(request, debtor: DebtorAccount, outcome) -> None:
    from dispatch.models import Channel, Dispatch, DispatchStatus, SkipReason
    from dispatch.selectors import letter_idempotency_key

    created = list(
        Dispatch.objects.filter(pk__in=outcome.created_ids).values_list("channel", flat=True)
    )
    letters = created.count(Channel.EMAIL)
    submissions = created.count(Channel.EINVOICE)
    parts = []
    if letters:
        parts.append(_("a letter to %(email)s") % {"email": debtor.contact_email})
    if submissions:
        parts.append(
            ngettext("%(n)d e-invoice", "%(n)d e-invoices", submissions) % {"n": submissions}
        )
    if parts:
        messages.success(
            request, _("Queued for sending: %(what)s.") % {"what": str(_(" and ")).join(parts)}
        )
        return
    plan = outcome.plan
    todays_letter = (
        Dispatch.objects.filter(
            idempotency_key=letter_idempotency_key(
                debtor_id=debtor.pk, business_date=outcome.run.business_date
            )
        )
        .values_list("status", flat=True)
        .first()
    )
    # The planner may name another reason (the interval since that letter): the letter of
    # the day is what the accountant who clicked twice needs to hear about.
    if todays_letter == DispatchStatus.SENT:
        messages.info(request, _("Nothing new was queued: today's letter was already sent."))
        return
    if todays_letter is not None or plan.existing:
        messages.info(
            request, _("Nothing new was queued: today's letter is already waiting to be sent.")
        )
        return
    skip = next((d for d in plan.skips if d.debtor_id == debtor.pk), None)
    if skip is not None:
        messages.warning(
            request,
            _("Nothing new was queued: %(reason)s.")
            % {"reason": SkipReason(skip.reason).label.lower()},
        )
    elif not (plan.letters or plan.skips or plan.submitters):
        messages.warning(request, _("Nothing was queued: this account has no pending invoice."))
    else:
        messages.info(request, _("Nothing new was queued."))


@login_required
@permission_required("dispatch.add_dispatch", raise_exception=True)
@require_POST
def debtor_send_now(request, pk: int):
    from dispatch.services import debtor_send_now as send_now

    debtor = _debtor_for(request, pk)
    _send_now_message(request, debtor, send_now(debtor=debtor))
    return redirect("billing:debtor_detail", pk=debtor.pk)


def _form_errors(request, form: forms.Form) -> None:
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else ""
        for error in errors:
            messages.error(request, f"{label}: {error}" if label else error)


@login_required
@permission_required("debtors.change_debtoraccount", raise_exception=True)
@require_POST
def debtor_pause(request, pk: int):
    debtor = _debtor_for(request, pk)
    form = PauseForm(request.POST, today=debtor_local_date(establishment=debtor.establishment))
    if not form.is_valid():
        _form_errors(request, form)
        return redirect("billing:debtor_detail", pk=debtor.pk)
    try:
        debtor = debtor_services.debtor_pause(
            debtor=debtor, until=form.cleaned_data["until"], reason=form.cleaned_data["reason"]
        )
    except DebtorError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            _("Reminders are paused until %(date)s.") % {"date": date_format(debtor.paused_until)},
        )
    return redirect("billing:debtor_detail", pk=debtor.pk)


@login_required
@permission_required("debtors.change_debtoraccount", raise_exception=True)
@require_POST
def debtor_resume(request, pk: int):
    debtor = _debtor_for(request, pk)
    try:
        debtor_services.debtor_resume(debtor=debtor)
    except DebtorError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Reminders are resumed."))
    return redirect("billing:debtor_detail", pk=debtor.pk)


@login_required
@permission_required("invoicing.change_invoice", raise_exception=True)
@require_POST
def invoice_dispute(request, pk: int):
    invoice = _invoice_for(request, pk)
    form = DisputeForm(request.POST)
    if not form.is_valid():
        _form_errors(request, form)
        return redirect("billing:debtor_detail", pk=invoice.debtor_id)
    try:
        invoice_mark_disputed(invoice=invoice, reason=form.cleaned_data["reason"])
    except InvoicingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            _("Invoice %(number)s is marked disputed: it is left out of letters.")
            % {"number": invoice.number},
        )
    return redirect("billing:debtor_detail", pk=invoice.debtor_id)


@login_required
@permission_required("invoicing.change_invoice", raise_exception=True)
@require_POST
def invoice_undispute(request, pk: int):
    invoice = _invoice_for(request, pk)
    try:
        invoice_clear_dispute(invoice=invoice)
    except InvoicingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            _("Invoice %(number)s is no longer disputed.") % {"number": invoice.number},
        )
    return redirect("billing:debtor_detail", pk=invoice.debtor_id)
