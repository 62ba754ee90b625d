from typing import Any

from django.db import transaction

from establishments.models import Establishment


@transaction.atomic
def establishment_upsert(*, code: str, **fields: Any) -> tuple[Establishment, bool]:
    """Create the establishment `code` or update the given fields; fields not given are kept.

    Returns `(establishment, changed)`; an establishment equal to `fields` is not saved, so
    a re-import leaves its `updated_at` alone.
    """
    establishment = Establishment.objects.select_for_update().filter(code=code).first()
    if establishment is None:
        establishment = Establishment(code=code, **fields)
        establishment.full_clean()
        establishment.save()
        return establishment, True

    changed = [name for name, value in fields.items() if getattr(establishment, name) != value]
    if not changed:
        return establishment, False
    for name in changed:
        setattr(establishment, name, fields[name])
    establishment.full_clean()
    establishment.save()
    return establishment, True
