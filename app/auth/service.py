"""Users, password hashing (argon2 via pwdlib), browser sessions and API bearer tokens, sign-in back-off."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from pwdlib import PasswordHash
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from app.audit import service as audit_service
from app.auth import passwords, throttle
from app.config import get_settings
from app.errors import Conflict, Invalid
from app.tables import AuthSession, Role, User

_password_hash = PasswordHash.recommended()


class AuthError(Exception):
    """Credentials or a token were refused; the message is safe to show. Answered 401 by the sign-in routes
    themselves: the failed sign-in's audit row must be committed, not rolled back with an error."""


class LoginThrottled(AuthError):
    """Too many failed sign-ins of this account or from this address: answered 429 with Retry-After, and the
    password was not checked (app/auth/throttle.py)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after} seconds")
        self.retry_after = retry_after


class UserExistsError(Conflict):
    """A user with this email exists already."""


def hash_password(password: str) -> str:
    return _password_hash.hash(password)


def _digest(token: str) -> str:
    """What the database keeps of a session or bearer token: HMAC-SHA256 under LUMEN_SECRET_KEY, so that a copy
    of the database alone can neither forge a token nor look one up. A new key ends every session."""
    return hmac.new(get_settings().secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; everything Lumen writes is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_user(
    session: Session, *, email: str, password: str, role: Role, full_name: str = "", specialty: str = ""
) -> User:
    """Create a user; refuses a duplicate email and a password the policy refuses (passwords.WeakPassword)."""
    email = email.strip().lower()
    if "@" not in email:
        raise ValueError(f"not an email address: {email!r}")
    passwords.check_password(password, email=email)
    if session.scalar(select(User).where(User.email == email)):
        raise UserExistsError(f"a user with email {email} exists already")
    user = User(
        email=email, password_hash=hash_password(password), role=role, full_name=full_name, specialty=specialty
    )
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, *, email: str, password: str) -> User:
    """The active user with these credentials, or AuthError. Rehashes outdated hashes."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.is_active:
        # Spend the same time as a real check so that emails cannot be probed by timing.
        _password_hash.verify(password, _DUMMY_HASH)
        raise AuthError("wrong email or password")
    valid, new_hash = _password_hash.verify_and_update(password, user.password_hash)
    if not valid:
        raise AuthError("wrong email or password")
    if new_hash:
        user.password_hash = new_hash
    return user


def sign_in(
    session: Session, *, email: str, password: str, kind: str, hours: int, ip: str
) -> tuple[str, AuthSession]:
    """Check the credentials and open a cookie session or issue a bearer token (`kind`); the clear token and its
    row. Audited either way: `login`, or `login_failed` with the email tried before AuthError. LoginThrottled,
    without a look at the password, while this account or this address is locked out. Invalid (422) for a NUL
    character, which no stored email has and neither the database nor the audit log can hold."""
    if "\x00" in email or "\x00" in password:
        raise Invalid("the email and the password must not contain NUL characters")
    attempt = throttle.begin(session, email=email, ip=ip)
    if attempt.retry_after:
        raise LoginThrottled(attempt.retry_after)
    try:
        user = authenticate(session, email=email, password=password)
    except AuthError:
        audit_service.record(session, action="login_failed", user_id=None, ip=ip, detail={"email": email})
        throttle.failed(session, attempt)
        raise
    throttle.succeeded(session, attempt)
    token, row = issue_token(session, user=user, kind=kind, hours=hours)
    via = "form" if kind == "cookie" else "token"
    audit_service.record(session, action="login", user_id=user.id, ip=ip, detail={"via": via})
    return token, row


def sign_out(session: Session, *, auth_session: AuthSession, ip: str) -> None:
    """Revoke the token or browser session, audited."""
    revoke(session, auth_session=auth_session)
    audit_service.record(session, action="logout", user_id=auth_session.user_id, ip=ip)


def issue_token(session: Session, *, user: User, kind: str, hours: int) -> tuple[str, AuthSession]:
    """Create a session row for a cookie or bearer token; returns the clear token (shown once)."""
    token = secrets.token_urlsafe(32)
    row = AuthSession(
        user_id=user.id,
        token_hmac=_digest(token),
        kind=kind,
        # Kept as it is: pages show it, and it is worth nothing without the session token, which is not kept.
        csrf_token=secrets.token_urlsafe(24),
        expires_at=datetime.now(UTC) + timedelta(hours=hours),
    )
    session.add(row)
    session.flush()
    return token, row


def resolve_token(session: Session, *, token: str, kind: str) -> AuthSession | None:
    """The live session row of this token, or None if unknown, expired or revoked."""
    # The user comes in the same query: callers read row.user on the event loop, where a lazy load would block.
    row = session.scalar(
        select(AuthSession)
        .options(joinedload(AuthSession.user))
        .where(AuthSession.token_hmac == _digest(token), AuthSession.kind == kind)
    )
    if row is None or row.revoked_at is not None or _aware(row.expires_at) <= datetime.now(UTC):
        return None
    if not row.user.is_active:
        return None
    return row


def revoke(session: Session, *, auth_session: AuthSession) -> None:
    auth_session.revoked_at = datetime.now(UTC)


_DUMMY_HASH = hash_password("lumen-timing-equaliser")
