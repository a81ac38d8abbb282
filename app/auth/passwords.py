"""One password policy for every way an account gets a password: `lumen create-user`, the admin form, the demo.

A password must have at least 12 characters and must not be easy to guess: zxcvbn (MIT; Dropbox's estimator,
which ships frequency lists of common and breached passwords, names and English words and looks for
keyboard walks, dates and repeats) must score it 3 or more out of 4, about 10^8 guesses or more. The email's
parts count as words an attacker knows, and a password that contains the email's name is refused outright.
"""

from __future__ import annotations

import re

from zxcvbn import zxcvbn

from app.errors import Invalid

MIN_LENGTH = 12
MAX_LENGTH = 1024
# zxcvbn's 0-4 scale: 3 is "safely unguessable: moderate protection from an offline slow-hash scenario".
MIN_SCORE = 3
# zxcvbn's work grows with the length; what lies past this many characters only adds strength.
_SCORED_CHARACTERS = 100


class WeakPassword(Invalid):
    """A password the policy refuses (422); the message says why and how to pick a better one."""


def check_password(password: str, *, email: str = "") -> None:
    """Refuse a password that is too short, too long, contains the email's name or is easy to guess."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"the password must have at most {MAX_LENGTH} characters")
    name = email.strip().lower().partition("@")[0]
    if len(name) >= 3 and name in password.lower():
        raise WeakPassword("the password must not contain the email address")
    result = zxcvbn(password[:_SCORED_CHARACTERS], user_inputs=_known_words(email))
    if result["score"] < MIN_SCORE:
        feedback = result["feedback"]
        hints = [feedback["warning"], *feedback["suggestions"]]
        why = " ".join(hint.rstrip(".") + "." for hint in hints if hint) or "Add a few more uncommon words."
        raise WeakPassword(f"the password is too easy to guess: {why}")


def _known_words(email: str) -> list[str]:
    """The email and its parts ("ada.lovelace@clinic.org" -> ada, lovelace, clinic, org) and the product's name."""
    email = email.strip().lower()
    return [word for word in {email, *re.split(r"[^a-z0-9]+", email), "lumen"} if word]
