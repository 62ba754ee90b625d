# Being written: configuration check, tonight's preview, runs (issue 4).
from django.http import Http404


def _todo(request, *args, **kwargs):
    raise Http404


configuration_check = run_list = run_preview = run_detail = _todo
