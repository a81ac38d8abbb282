"""Back-off of failed sign-ins, per account and per client address, kept in the database for every API process.

Each sign-in counts against two keys: the email tried (known or not, so that a lock-out tells nothing about
whether an account exists) and the client's address. After FREE_FAILURES failures of a key, each further
failure locks it for 2, 4, 8, ... seconds, at most 15 minutes; while a key is locked a sign-in is answered 429
with Retry-After and its password is not checked. Addresses get more room than accounts: a hospital's
computers may reach Lumen through one address. A success clears the account's count, not the address's. A key
forgets its failures an hour after the last one. Each lock-out is audited (`login_locked`, with the address).

The rows of an attempt are locked (SELECT ... FOR UPDATE on Postgres; SQLite writes one at a time anyway) from
before the password is checked until the request commits, so that parallel guesses at one account take turns
instead of all slipping through before the first failure is counted.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.audit import service as audit_service
from app.tables import LoginThrottle

Scope = Literal["account", "address"]
FREE_FAILURES: dict[Scope, int] = {"account": 5, "address": 20}
MAX_LOCK_SECONDS = 15 * 60
FORGET_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Attempt:
    """One sign-in: the email tried, the client's address, their rows (locked by this unit of work) and how
    long it must still wait (0: it may go on)."""

    email: str
    ip: str
    account: LoginThrottle
    address: LoginThrottle
    retry_after: int


def key(scope: Scope, value: str) -> str:
    """The row key of an account (a normalised email) or an address; hashed, so the table holds no emails."""
    return f"{scope}:{hashlib.sha256(value.encode()).hexdigest()}"


def lock_seconds(failures: int, scope: Scope) -> int:
    """How long a key is locked after its `failures`-th failure: 0 while under the free ones, then doubling."""
    over = failures - FREE_FAILURES[scope]
    return 0 if over < 0 else min(2 ** (over + 1), MAX_LOCK_SECONDS)


def begin(session: Session, *, email: str, ip: str) -> Attempt:
    """Lock (making them if need be) the rows of this email and this address for the rest of the request; an
    Attempt that says how many seconds a lock-out still has to run."""
    now = datetime.now(UTC)
    email = email.strip().lower()
    account, address = _locked_rows(session, [key("account", email), key("address", ip)], now=now)
    wait = 0.0
    for row in (account, address):
        if _aware(row.updated_at) < now - FORGET_AFTER:
            row.failures, row.locked_until = 0, None
        if row.locked_until is not None:
            wait = max(wait, (_aware(row.locked_until) - now).total_seconds())
    return Attempt(email=email, ip=ip, account=account, address=address, retry_after=math.ceil(max(wait, 0)))


def failed(session: Session, attempt: Attempt) -> None:
    """Count a failure against the account and the address; lock and audit those past their free failures."""
    now = datetime.now(UTC)
    scopes: tuple[tuple[Scope, LoginThrottle], ...] = (("account", attempt.account), ("address", attempt.address))
    for scope, row in scopes:
        row.failures += 1
        row.updated_at = now
        seconds = lock_seconds(row.failures, scope)
        if seconds:
            row.locked_until = now + timedelta(seconds=seconds)
            subject = {"email": attempt.email} if scope == "account" else {"address": attempt.ip}
            detail = {"scope": scope, **subject, "failures": row.failures, "seconds": seconds}
            audit_service.record(session, action="login_locked", user_id=None, ip=attempt.ip, detail=detail)
    _forget_quiet_keys(session, now=now)


def succeeded(session: Session, attempt: Attempt) -> None:
    """A right password clears the account's failures (the address keeps its count)."""
    session.delete(attempt.account)


def _locked_rows(session: Session, keys: list[str], *, now: datetime) -> list[LoginThrottle]:
    """The rows of `keys`, in that order, made if missing and locked until the unit of work ends. Every request
    locks an account key before an address key, so two requests never wait for each other in a circle."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(LoginThrottle)
        .values([{"key": name, "failures": 0, "updated_at": now} for name in keys])
        .on_conflict_do_nothing(index_elements=["key"])
    )
    found = session.scalars(
        select(LoginThrottle)
        .where(LoginThrottle.key.in_(keys))
        .order_by(LoginThrottle.key)  # "account:..." before "address:..."
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    by_key = {row.key: row for row in found}
    return [by_key[name] for name in keys]


def _forget_quiet_keys(session: Session, *, now: datetime) -> None:
    """Delete the rows of keys without a failure for FORGET_AFTER; rows another sign-in holds are left for later
    (SKIP LOCKED), so that this clean-up never waits for, or deadlocks with, a sign-in in progress."""
    quiet = (
        select(LoginThrottle.key)
        .where(LoginThrottle.updated_at < now - FORGET_AFTER)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # Not our rows (ours were touched just now): nothing in this session to keep in step.
    session.execute(
        delete(LoginThrottle).where(LoginThrottle.key.in_(quiet)).execution_options(synchronize_session=False)
    )


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; everything Lumen writes is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
