# Being written: debtor list, detail and actions (issue 4).
from django.http import Http404


def _todo(request, *args, **kwargs):
    raise Http404


debtor_list = debtor_detail = debtor_letter_preview = debtor_send_now = _todo
debtor_pause = debtor_resume = invoice_dispute = invoice_undispute = _todo
