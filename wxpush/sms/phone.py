"""Phone numbers: parsed as people type them into E.164, and shown masked.

A number without a ``+`` is a mainland China number (``13800138000`` is +86); numbers that
cannot receive a text message (landlines, toll-free) are refused. Full numbers are never
logged: :func:`mask_phone` is what logs and pages show.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

from wxpush.errors import BadRequest

_MAX_INPUT = 40  # longer "phone numbers" are not parsed at all
_NOT_FOR_SMS = frozenset(
    {
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
    }
)
_INVALID_PHONE = (
    "That is not a valid mobile phone number; enter it like 13800138000 or +86 138 0013 8000."
)


def normalize_phone(raw: str) -> str:
    """Parse a phone number as people type it and return it in E.164 (``+8613800138000``).

    A number without a ``+`` is read as a mainland China number (so ``13800138000`` means
    +86); landlines and other numbers that cannot receive SMS are refused with a 400.
    """
    text = raw.strip()
    if not text or len(text) > _MAX_INPUT:
        raise BadRequest(_INVALID_PHONE, code="invalid_phone")
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else "CN")
    except phonenumbers.NumberParseException as exc:
        raise BadRequest(_INVALID_PHONE, code="invalid_phone") from exc
    if not phonenumbers.is_valid_number(number):
        raise BadRequest(_INVALID_PHONE, code="invalid_phone")
    if phonenumbers.number_type(number) in _NOT_FOR_SMS:
        raise BadRequest(
            "That number cannot receive text messages; enter a mobile number.",
            code="invalid_phone",
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """Show a phone number the way people recognise theirs without exposing it.

    ``+8613800138000`` becomes ``+86 138****8000``: the country code, the first three and
    the last four digits of the national number.
    """
    try:
        number = phonenumbers.parse(e164, None)
        country, national = f"+{number.country_code}", str(number.national_number)
    except phonenumbers.NumberParseException:
        digits = "".join(ch for ch in e164 if ch.isdigit())
        return "****" + digits[-2:]
    tail = 4 if len(national) >= 8 else 2
    head = min(3, max(0, len(national) - tail - 3))
    hidden = len(national) - head - tail
    return f"{country} {national[:head]}{'*' * hidden}{national[len(national) - tail :]}"
