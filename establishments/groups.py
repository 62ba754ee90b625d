"""The groups of the accountants' pages, defined in code and installed by a data migration."""

# group name -> {app_label: [permission codenames]}
GROUPS = {
    # Work the debtor accounts: settings, pauses, disputes, "send now".
    "Comptables": {
        "establishments": ["view_establishment"],
        "debtors": ["view_debtoraccount", "change_debtoraccount"],
        "invoicing": ["view_invoice", "change_invoice", "view_payment"],
        "dispatch": [
            "view_dispatch",
            "add_dispatch",
            "view_run",
            "view_skippeddebtor",
            "view_dispatchevent",
            "view_lifecycleevent",
            "view_integration",
        ],
    },
    # Read everything, change nothing.
    "Direction": {
        "establishments": ["view_establishment"],
        "debtors": ["view_debtoraccount"],
        "invoicing": ["view_invoice", "view_payment"],
        "dispatch": [
            "view_dispatch",
            "view_run",
            "view_skippeddebtor",
            "view_dispatchevent",
            "view_lifecycleevent",
            "view_integration",
        ],
    },
}


def groups_install(*, apps) -> None:
    """Create or update the groups with exactly their permissions."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, by_app in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        permissions = [
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
            for app_label, codenames in by_app.items()
            for codename in codenames
        ]
        group.permissions.set(permissions)
