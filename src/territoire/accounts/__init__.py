"""Accounts: who may do what. Users, roles, tenants and API keys arrive with the accounts issue."""

from territoire.accounts.authz import authorize

__all__ = ["authorize"]
