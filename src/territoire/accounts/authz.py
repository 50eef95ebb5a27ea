"""The single authorization dependency every route goes through.

``create_app`` installs :func:`authorize` as an application-wide dependency, so no route can be
added that bypasses it. Until the accounts issue lands it admits every request; the accounts
work fills it in (API keys, roles per tenant) without touching any route.
"""

from __future__ import annotations

from fastapi import Request


async def authorize(request: Request) -> None:
    """Admit or refuse ``request``; raising refuses it. Today: admit (no accounts yet).

    ``async`` because it does no blocking work: FastAPI then runs it without a thread-pool hop."""
    request.state.principal = None
