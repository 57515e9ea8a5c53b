"""Admin roles and the permission matrix (SPEC §6). Pure data, no I/O."""

from __future__ import annotations

from enum import StrEnum

# Everyone holding one of these is e-mailed about the credits balance: the
# seed's two lists, merged (SPEC §6).
NOTIFIED_ROLES: frozenset[str] = frozenset(
    {
        "global_admin",
        "billing_admin",
        "user_admin",
        "helpdesk_admin",
        "service_support_admin",
        "application_admin",
        "license_admin",
        "cloud_device_admin",
        "authentication_admin",
        "privileged_authentication_admin",
        "teams_admin",
        "teams_communications_admin",
        "teams_communications_support_engineer",
        "teams_communications_support_specialist",
        "skype_for_business_admin",
        "device_admin",
        "azure_ad_joined_device_local_admin",
    }
)

# reports_reader reads usage reports but is not e-mailed: it is not in the seed's lists.
ALL_ROLES: frozenset[str] = NOTIFIED_ROLES | {"reports_reader"}


class Permission(StrEnum):
    FUND = "fund"  # purchases, payment methods, auto-recharge
    MANAGE_USERS = "manage_users"  # users and licenses
    READ = "read"  # reports, balance, pools, transactions, notifications


ROLES_BY_PERMISSION: dict[Permission, frozenset[str]] = {
    Permission.FUND: frozenset({"global_admin", "billing_admin"}),
    Permission.MANAGE_USERS: frozenset({"global_admin", "user_admin", "license_admin"}),
    Permission.READ: frozenset(
        {
            "global_admin",
            "billing_admin",
            "user_admin",
            "license_admin",
            "teams_admin",
            "teams_communications_admin",
            "teams_communications_support_engineer",
            "teams_communications_support_specialist",
            "reports_reader",
        }
    ),
}


def permissions_of(roles: frozenset[str] | set[str] | list[str]) -> frozenset[Permission]:
    held = set(roles)
    return frozenset(p for p, allowed in ROLES_BY_PERMISSION.items() if held & allowed)


def may(roles: frozenset[str] | set[str] | list[str], permission: Permission) -> bool:
    return bool(set(roles) & ROLES_BY_PERMISSION[permission])
