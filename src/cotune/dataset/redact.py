"""Redact personal data from a dataset before it leaves its owner.

A :class:`Detector` finds typed :class:`Span` s in a string. :class:`RegexDetector`
is built in and needs nothing else; :class:`PresidioDetector` wraps Presidio's
analyzer (``pip install presidio-analyzer``) as an optional, stronger detector behind
the same interface. A :class:`Redactor` runs its detectors, resolves overlaps and
replaces every value with a typed placeholder such as ``<EMAIL_1>``:

- One :class:`Redactor` is one dataset's placeholder map: the same raw value always
  gets the same placeholder, numbered per type in order of first appearance, so
  ``<EMAIL_1>`` stays the same person throughout the dataset. Values are normalised
  first (e-mail lower-cased; digits only for phones, cards and IDs; IBANs without
  spaces; IP addresses in canonical form), so ``Bob@X.org`` and ``bob@x.org`` match.
- Overlapping spans are merged: the merged region is replaced by one placeholder whose
  type is that of its longest member (ties go to a fixed priority: ``TOKEN_URL``,
  ``SECRET``, ``IBAN``, ``CARD``, ``NATIONAL_ID``, ``EMAIL``, ``HOME_PATH``, ``IP``,
  ``PHONE``), so placeholders never nest and no fragment of a value survives next to one.
- Text that already looks like a placeholder (``<TYPE_n>``) is never redacted again,
  and the lines around each replacement are searched again until nothing more is
  found (a value glued to another can hide until its neighbour is replaced), which
  makes redaction idempotent. A value found in such a later pass is numbered after
  the values of the earlier pass.
- Home paths lose their prefix up to and including the user name:
  ``/home/alice/src/x.py`` becomes ``<HOME_PATH_1>/src/x.py``.
- URLs keep their shape; only the value of a secret-bearing query or fragment
  parameter (``token=``, ``access_token=``, ``key=``, ``sig=``, ``password=``, …) or
  the password in ``user:password@host`` is replaced, as ``<TOKEN_URL_n>``.
- A dotted quad whose four parts are at most 255 is an IPv4 address even when it is
  really a version number (``version 1.2.3.4``): redacting too much is the safe
  side. ``v1.2.3.4`` (glued to a letter) and versions with three parts or a part
  above 255 are left alone.

:meth:`Redactor.redact_jsonl` walks every string value of every JSON line (keys and
non-string values untouched) and returns the redacted JSONL with a
:class:`RedactionReport`: counts per type and lines touched, never a raw value. The
placeholder map stays in the :class:`Redactor`; nothing here logs a raw value.
"""

from __future__ import annotations

import abc
import importlib
import ipaddress
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cotune.common.errors import CotuneError

logger = logging.getLogger(__name__)

EMAIL = "EMAIL"
PHONE = "PHONE"
IP = "IP"
CARD = "CARD"
IBAN = "IBAN"
NATIONAL_ID = "NATIONAL_ID"
SECRET = "SECRET"  # noqa: S105 - a type name, not a password
HOME_PATH = "HOME_PATH"
TOKEN_URL = "TOKEN_URL"  # noqa: S105 - a type name, not a password

BUILTIN_TYPES: tuple[str, ...] = (
    EMAIL,
    PHONE,
    IP,
    CARD,
    IBAN,
    NATIONAL_ID,
    SECRET,
    HOME_PATH,
    TOKEN_URL,
)
"""The types :class:`RegexDetector` finds."""

_PRIORITY: dict[str, int] = {
    TOKEN_URL: 0,
    SECRET: 1,
    IBAN: 2,
    CARD: 3,
    NATIONAL_ID: 4,
    EMAIL: 5,
    HOME_PATH: 6,
    IP: 7,
    PHONE: 8,
}
"""Which type names a merged overlap when its longest members tie (lower wins); types from
other detectors come last."""

_MAX_ROUNDS = 4
"""Redaction passes over one string at most (see ``Redactor._redact``); one is the rule,
two happen when a value was glued to another."""
_TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_[0-9]+>")
"""What a placeholder looks like; text matching it is never redacted again."""


class RedactionError(CotuneError, ValueError):
    """A dataset the redactor cannot process (the message never quotes its content)."""


class PresidioUnavailableError(CotuneError, ImportError):
    """:class:`PresidioDetector` was asked for but Presidio is not installed."""


@dataclass(frozen=True, order=True)
class Span:
    """A detected value: ``text[start:end]`` is personal data of ``type``.

    Its repr holds offsets only, never the value itself.
    """

    start: int
    end: int
    type: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"empty or negative span {self.start}..{self.end}")


class Detector(abc.ABC):
    """Finds personal data in a string."""

    @abc.abstractmethod
    def find(self, text: str) -> list[Span]:
        """Every span of personal data in ``text``; spans may overlap."""


# --- validators -------------------------------------------------------------------------------

_Validator = Callable[[str, re.Match[str]], tuple[int, int] | None]
"""Given the text and a candidate match, the span to keep (maybe narrowed), or None."""


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check (cards, Canadian SINs)."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
"""ISO 13616 length of each country's IBAN."""


def iban_valid(iban: str) -> bool:
    """Whether a compact, upper-case IBAN has its country's length and passes mod-97."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _valid_ipv4(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    parts = match.group().split(".")
    if all(int(part) <= 255 for part in parts):
        return match.span()
    return None


def _valid_ipv6(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    candidate = match.group()
    address, _, zone = candidate.partition("%")
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    groups = [group for group in address.split(":") if group]
    if "." in address or zone or len(groups) >= 3:
        return match.span()
    return None  # "1::2" in a slice, "::", "a::b": too often not an address


_IBAN_BEFORE = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: [A-Z0-9]{4})* \Z")


def _inside_iban(text: str, start: int) -> bool:
    """Whether ``start`` follows the first groups of a spaced IBAN (valid or not)."""
    return _IBAN_BEFORE.search(text, max(0, start - 45), start) is not None


def _valid_phone(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    raw = match.group()
    count = sum(char.isdigit() for char in raw)
    international = raw.startswith("+")
    if count > 15 and international:  # "+44 20 7946 0958 2024 …": stop at a space in time
        for cut in range(len(raw) - 1, 0, -1):
            if raw[cut] == " ":
                count = sum(char.isdigit() for char in raw[:cut])
                if count <= 15:
                    raw = raw[:cut]
                    break
    minimum = 8 if international else 10 if raw.startswith("0") else 7
    if minimum <= count <= 15 and not _inside_iban(text, match.start()):
        return match.start(), match.start() + len(raw)
    return None


_CARD_SCHEMES: tuple[tuple[re.Pattern[str], range], ...] = (
    (re.compile(r"4"), range(13, 20, 3)),  # Visa: 13, 16 or 19 digits
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]|7[01]|720)"), range(16, 17)),  # Mastercard
    (re.compile(r"3[47]"), range(15, 16)),  # American Express
    (re.compile(r"3(?:0[0-5]|[68])"), range(14, 20)),  # Diners Club
    (re.compile(r"35"), range(16, 20)),  # JCB
    (re.compile(r"6(?:011|4[4-9]|5)"), range(16, 20)),  # Discover
    (re.compile(r"62"), range(16, 20)),  # UnionPay
    (re.compile(r"5[06-9]|6"), range(12, 20)),  # Maestro
)
"""Issuer prefixes and the card lengths each issues."""


def _valid_card(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    digits = _digits(match.group())
    if _inside_iban(text, match.start()):
        return None
    for prefix, lengths in _CARD_SCHEMES:
        if prefix.match(digits) and len(digits) in lengths:
            return match.span() if luhn_valid(digits) else None
    return None


def _valid_iban(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    raw = match.group()
    expected = _IBAN_LENGTHS.get(raw[:2])
    if expected is None:
        return None
    seen = 0
    for offset, char in enumerate(raw):
        if char != " ":
            seen += 1
        if seen == expected:
            end = offset + 1
            break
    else:
        return None
    if end < len(raw) and raw[end] != " ":
        return None  # the IBAN would end inside a group
    if iban_valid(raw[:end].replace(" ", "")):
        return match.start(), match.start() + end
    return None


def _valid_sin(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    digits = _digits(match.group())
    if digits[0] not in "08" and luhn_valid(digits) and not _inside_iban(text, match.start()):
        return match.span()
    return None


_AUTHORITY_BEFORE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@]*\Z")


def _valid_email(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    if _AUTHORITY_BEFORE.search(text, max(0, match.start() - 300), match.start()):
        return None  # scheme://user:password@host: the password is a TOKEN_URL
    return match.span()


def _valid_password(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    value = match.group("value")
    glued = match.group("sep") == "=" and not match.group("space")
    if glued or any(not char.isalpha() for char in value):
        return match.span("value")
    return None  # "Password: reset it" is prose


_HEX = frozenset("0123456789abcdefABCDEF")


def _valid_key_value(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    value = match.group("value").rstrip("=")
    if not any(char.isdigit() for char in value) or not any(char.isalpha() for char in value):
        return None
    hexadecimal = all(char in _HEX for char in value)
    mixed_case = any(char.isupper() for char in value) and any(char.islower() for char in value)
    if hexadecimal or mixed_case or "+" in value or "/" in value or len(value) >= 32:
        return match.span("value")
    return None  # cache_key=user_profile_v2_2024 is an identifier, not a secret


# --- patterns ---------------------------------------------------------------------------------
#
# RegexDetector runs each pattern only near a cheap trigger (a run of digits, an "@", two
# capitals and two digits, a literal key prefix or key word) instead of from every
# character. That finds what a pass over the whole text finds because every pattern either
# starts with a look-behind that refuses to start inside a longer token, or starts with the
# literal it is triggered by; RegexDetector._find_exhaustive is the slow reference.

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}+"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-])"
)

_PHONE = re.compile(
    r"""
    (?<![\w+.\-/])
    (?:
        \+[1-9]\d{0,2}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){1,5}     # +44 20 7946 0958
      | (?<!\d[ ])                                    # the rest never starts inside a number
        (?:
            (?:1[ .\-])?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .\-])      # (415) 555-0132:
            [2-9]\d{2}[ .\-]\d{4}                        # NANP area and exchange: 2-9
          | 0\d{1,4}[ \-]\d{3,4}[ \-]?\d{3,4}                           # 020 7946 0958
          | 0[1-9](?:[ .\-]\d{2}){4}                                    # 01 42 68 53 00
        )
    )
    (?![\w]|[.\-/]\d)
    """,
    re.VERBOSE | re.ASCII,
)

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)", re.ASCII)

_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})"
    r"(?:%[0-9A-Za-z_.]+)?(?![\w:]|\.\d)"
)

_CARD = re.compile(
    r"""
    (?<![\w\-.])
    (?:
        \d{4}([ \-])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?   # 4111 1111 1111 1111
      | \d{4}([ \-])\d{6}\2\d{4,5}                       # 3782 822463 10005
      | \d{13,19}
    )
    (?![\w]|[\-.]\d)
    """,
    re.VERBOSE | re.ASCII,
)

# Digits are ASCII digits: \d and \w in these patterns are ASCII-only (re.ASCII).
_IBAN = re.compile(
    r"(?<![\w])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?(?!\w)", re.ASCII
)
_NINO = re.compile(
    r"(?<![\w])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)", re.ASCII
)
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_SSN = re.compile(r"(?<![\w\-])(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w]|-\d)", re.ASCII)
_SIN = re.compile(r"(?<![\w\-])(?<!\d[ ])\d{3}([ \-])\d{3}\1\d{3}(?![\w]|[ \-]\d)", re.ASCII)

_SECRET_TRIGGERS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"sk-"), 0),
    (re.compile(r"k_"), -1),  # sk_, rk_, pk_
    (re.compile(r"gh[pousr]_"), 0),
    (re.compile(r"github_pat_"), 0),
    (re.compile(r"A(?:[KS]IA|Iza)"), 0),
    (re.compile(r"xox"), 0),
    (re.compile(r"glpat-"), 0),
    (re.compile(r"hf_"), 0),
    (re.compile(r"eyJ"), 0),
    (re.compile(r"-----BEGIN"), 0),
)
"""Literal parts of the key formats ``_SECRET_TOKEN`` knows, and where the key starts."""
_SECRET_TOKEN = re.compile(
    r"""
    (?<![\w\-])
    (?:
        sk-(?:proj-|ant-|live-)?[A-Za-z0-9_\-]{20,}           # OpenAI, Anthropic
      | (?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}           # Stripe
      | gh[pousr]_[A-Za-z0-9]{30,}                             # GitHub
      | github_pat_[A-Za-z0-9_]{22,}
      | (?:AKIA|ASIA)[0-9A-Z]{16}                              # AWS access key id
      | xox[abposr]-[A-Za-z0-9\-]{10,}                         # Slack
      | AIza[0-9A-Za-z_\-]{35}                                 # Google
      | glpat-[A-Za-z0-9_\-]{20,}                              # GitLab
      | hf_[A-Za-z0-9]{30,}                                    # Hugging Face
      | eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}   # JWT
      | -----BEGIN[ ](?:[A-Z]+[ ])*PRIVATE[ ]KEY-----                       # PEM
        [\s\S]*?-----END[ ](?:[A-Z]+[ ])*PRIVATE[ ]KEY-----
    )
    (?![\w\-])
    """,
    re.VERBOSE,
)
_ASSIGN_KEYWORDS: tuple[str, ...] = ("key", "secret", "token", "auth", "credential")
_SECRET_ASSIGN = re.compile(
    r"(?i:secret|token|key|auth|credentials?|authorization)[\"']?[ \t]*[:=][ \t]*[\"']?"
    r"(?:(?i:bearer|basic|token)[ ]+)?(?P<value>[A-Za-z0-9+/_\-.~]{16,}={0,2})(?![\w+/\-.~=])"
)
_PASSWORD_KEYWORDS: tuple[str, ...] = ("pass", "pwd")
_PASSWORD_ASSIGN = re.compile(
    r"(?i:passw(?:or)?d|pwd|passphrase)[\"']?(?P<space>[ \t]*)(?P<sep>[:=])[ \t]*[\"']?"
    r"(?P<value>[^\s\"'&,;<>]{4,})"
)

_HOME_PREFIXES: tuple[str, ...] = ("/home/", "/Users/")
_HOME_POSIX = re.compile(
    r"(?<![\w.\-/~])/(?:home|Users)/(?!Shared\b)[A-Za-z0-9._\-]*[A-Za-z0-9_\-]"
)
_HOME_WINDOWS = re.compile(
    r"(?<![\w])[A-Za-z]:(?:\\{1,2}|/)(?i:users|documents and settings)(?:\\{1,2}|/)"
    r"(?!(?i:public|default|all users)(?:[\\/]|\b))"
    r"(?:\w[\w.\-]*(?: [\w.\-]+)?(?=[\\/])|[\w.\-$]+)"
)

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s\"'<>`]+")
_URL_PARAM = re.compile(r"[?&;#](?P<name>[A-Za-z0-9_.\-\[\]]+)=(?P<value>[^&#;\s\"'<>]+)")
_URL_USERINFO = re.compile(r"://[^\s/@:<>\"']*:(?P<value>[^\s/@<>\"']+)@")
_URL_TRAILING = ".,;:!?)]}'\""
_SENSITIVE_PARAMS = frozenset(
    {"key", "sig", "code", "auth", "sid", "pwd", "pass", "session", "jwt", "otp", "hash"}
)
_SENSITIVE_PARAM_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "api_key",
    "api-key",
    "signature",
    "credential",
    "session",
    "access_key",
    "private",
)

# Triggers: where a pattern can match at all.
_DIGIT_RUN = re.compile(
    r"\d(?<!\d\d)(?:(?>[ \-.()/+]{0,3}\d){6,}|\d{0,2}\.\d{1,3}\.\d{1,3}\.\d)", re.ASCII
)
"""Seven digits with short separators between them, or an IPv4 shape: every phone, card,
SSN, SIN and IPv4 address lies inside one such run (give or take a leading ``+``/``(``)."""
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
"""Two colons close together, as every IPv6 address the detector accepts has."""
_CAPS_DIGITS = re.compile(r"[A-Z](?<![\w][A-Z])[A-Z] ?\d\d", re.ASCII)
"""Two capitals and two digits, as every IBAN and National Insurance number starts. A
character class first lets the regex engine skip quickly to candidates."""
_ANY_TRIGGER = re.compile(
    r"[\d@:/\\=]|sk-|k_|gh[pousr]_|github_pat_|A[KS]IA|AIza|xox|glpat-|hf_|eyJ|-----BEGIN"
)
"""Something every span contains; short strings without it (most JSON values) skip the rest."""
_SHORT = 256


def _valid_nino(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    return None if match.group()[:2] in _NINO_BAD_PREFIXES else match.span()


def _sensitive_param(name: str) -> bool:
    lowered = name.lower()
    if lowered.endswith("type"):  # token_type=bearer
        return False
    return lowered in _SENSITIVE_PARAMS or any(part in lowered for part in _SENSITIVE_PARAM_PARTS)


@dataclass(frozen=True)
class _Rule:
    type: str
    pattern: re.Pattern[str]
    validator: _Validator | None = None


_EMAIL_RULE = _Rule(EMAIL, _EMAIL, _valid_email)
_DIGIT_RULES: tuple[_Rule, ...] = (
    _Rule(PHONE, _PHONE, _valid_phone),
    _Rule(IP, _IPV4, _valid_ipv4),
    _Rule(CARD, _CARD, _valid_card),
    _Rule(NATIONAL_ID, _SSN),
    _Rule(NATIONAL_ID, _SIN, _valid_sin),
)
_IPV6_RULE = _Rule(IP, _IPV6, _valid_ipv6)
_SCANNED_RULES: tuple[_Rule, ...] = (
    _Rule(IBAN, _IBAN, _valid_iban),
    _Rule(NATIONAL_ID, _NINO, _valid_nino),
)
_SECRET_TOKEN_RULE = _Rule(SECRET, _SECRET_TOKEN)
_SECRET_ASSIGN_RULE = _Rule(SECRET, _SECRET_ASSIGN, _valid_key_value)
_PASSWORD_RULE = _Rule(SECRET, _PASSWORD_ASSIGN, _valid_password)
_HOME_POSIX_RULE = _Rule(HOME_PATH, _HOME_POSIX)
_HOME_WINDOWS_RULE = _Rule(HOME_PATH, _HOME_WINDOWS)
_ALL_RULES: tuple[_Rule, ...] = (
    _EMAIL_RULE,
    *_DIGIT_RULES,
    _IPV6_RULE,
    *_SCANNED_RULES,
    _SECRET_TOKEN_RULE,
    _SECRET_ASSIGN_RULE,
    _PASSWORD_RULE,
    _HOME_POSIX_RULE,
    _HOME_WINDOWS_RULE,
)


def _accept(rule: _Rule, text: str, match: re.Match[str], spans: list[Span]) -> None:
    if rule.validator is None:
        spans.append(Span(match.start(), match.end(), rule.type))
        return
    kept = rule.validator(text, match)
    if kept is not None:
        spans.append(Span(kept[0], kept[1], rule.type))


def _literal_hits(text: str, literal: str) -> list[int]:
    hits: list[int] = []
    index = text.find(literal)
    while index >= 0:
        hits.append(index)
        index = text.find(literal, index + 1)
    return hits


def _windows(hits: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Hit ranges clipped to ``[0, size)``, merged into disjoint, sorted windows."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(hits):
        start, end = max(0, start), min(size, end)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _scan_window(rule: _Rule, text: str, start: int, end: int, spans: list[Span]) -> None:
    for match in rule.pattern.finditer(text, start, end):
        if match.end() == end < len(text):  # cut short by the window: match it whole
            whole = rule.pattern.match(text, match.start())
            if whole is not None:
                _accept(rule, text, whole, spans)
            continue
        _accept(rule, text, match, spans)


def _url_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    done = 0
    for hit in _literal_hits(text, "://"):
        userinfo = _URL_USERINFO.match(text, hit)
        if userinfo:
            spans.append(Span(userinfo.start("value"), userinfo.end("value"), TOKEN_URL))
        if hit < done:
            continue
        url = _URL.search(text, max(0, hit - 17))
        if url is None or url.start() > hit:
            continue
        done = url.end()
        raw = url.group().rstrip(_URL_TRAILING)
        base = url.start()
        for param in _URL_PARAM.finditer(raw):
            if _sensitive_param(param.group("name")):
                start, end = param.span("value")
                spans.append(Span(base + start, base + end, TOKEN_URL))
    return spans


class RegexDetector(Detector):
    r"""The built-in detector: compiled patterns plus checksums, no dependencies.

    Finds:

    - e-mail addresses (not the ``user:password@host`` of a URL);
    - phone numbers with separators: ``+CC …`` (8 to 15 digits), North American
      ``(415) 555-0132``/``415.555.0132`` (area and exchange codes start with 2-9),
      trunk-prefixed national ``020 7946 0958`` (10 digits or more) and French
      ``01 42 68 53 00``; never bare digit runs, dates, times or versions;
    - IPv4 (four parts, each at most 255) and IPv6 (at least three groups, an embedded
      IPv4 or a zone, validated by :mod:`ipaddress`);
    - card numbers: 13 to 19 digits, plain or grouped, with a known issuer prefix and
      length, passing Luhn;
    - IBANs, plain or in groups of four: the country's length and ISO 13616 mod-97;
    - national IDs: US SSN ``ddd-dd-dddd`` (not area 000, 666 or 9xx), UK National
      Insurance numbers, Canadian SINs ``ddd-ddd-ddd`` passing Luhn;
    - secrets: ``sk-``/``sk_live_``/``ghp_``/``github_pat_``/``AKIA``/``xoxb-``/
      ``AIza``/``glpat-``/``hf_`` keys, JWTs and PEM private keys whole; after
      ``key``/``token``/``secret``/``auth``/``credential`` and ``=`` or ``:``, a value of
      16 or more characters that looks like a key (hex, base64, mixed case or 32+
      long); after ``password``/``passwd``/``pwd``/``passphrase``, the value when
      written ``password=value`` or when it has a digit or symbol;
    - home-directory paths: ``/home/<user>``, ``/Users/<user>``, ``C:\Users\<user>``;
    - in URLs, the value of a parameter named like a secret and the password of
      ``user:password@``.

    Each pattern runs only near a cheap trigger (a run of digits, an ``@``, a literal
    key prefix or key word), which finds what running it over the whole text finds.
    """

    def __init__(self, types: Iterable[str] | None = None) -> None:
        wanted = frozenset(BUILTIN_TYPES if types is None else types)
        unknown = wanted - frozenset(BUILTIN_TYPES)
        if unknown:
            raise ValueError(f"RegexDetector has no types {sorted(unknown)}")
        self._types = wanted
        self._digit_rules = tuple(rule for rule in _DIGIT_RULES if rule.type in wanted)
        self._scanned_rules = tuple(rule for rule in _SCANNED_RULES if rule.type in wanted)

    @property
    def types(self) -> frozenset[str]:
        """The types this detector looks for."""
        return self._types

    def find(self, text: str) -> list[Span]:
        """Every candidate span that passes its type's validation."""
        spans: list[Span] = []
        size = len(text)
        if size < _SHORT and not _ANY_TRIGGER.search(text):
            return spans
        wanted = self._types
        if EMAIL in wanted and "@" in text:
            hits = ((at - 65, at + 260) for at in _literal_hits(text, "@"))
            for start, end in _windows(hits, size):
                _scan_window(_EMAIL_RULE, text, start, end, spans)
        if self._digit_rules:
            for run in _DIGIT_RUN.finditer(text):
                start, end = max(0, run.start() - 2), min(size, run.end() + 2)
                for rule in self._digit_rules:
                    _scan_window(rule, text, start, end, spans)
        if IP in wanted and ":" in text:
            hits = ((m.start() - 45, m.end() + 60) for m in _IPV6_HINT.finditer(text))
            for start, end in _windows(hits, size):
                _scan_window(_IPV6_RULE, text, start, end, spans)
        if self._scanned_rules:
            for candidate in _CAPS_DIGITS.finditer(text):
                for rule in self._scanned_rules:
                    match = rule.pattern.match(text, candidate.start())
                    if match:
                        _accept(rule, text, match, spans)
        if SECRET in wanted:
            self._find_secrets(text, spans)
        if HOME_PATH in wanted:
            for prefix in _HOME_PREFIXES:
                for hit in _literal_hits(text, prefix):
                    posix = _HOME_POSIX.match(text, hit)
                    if posix:
                        _accept(_HOME_POSIX_RULE, text, posix, spans)
            for separator in (":\\", ":/"):
                for hit in _literal_hits(text, separator):
                    windows = _HOME_WINDOWS.match(text, hit - 1) if hit else None
                    if windows:
                        _accept(_HOME_WINDOWS_RULE, text, windows, spans)
        if TOKEN_URL in wanted and "://" in text:
            spans.extend(_url_spans(text))
        return spans

    def _find_secrets(self, text: str, spans: list[Span]) -> None:
        for trigger, offset in _SECRET_TRIGGERS:
            for found in trigger.finditer(text):
                start = found.start() + offset
                match = _SECRET_TOKEN.match(text, start) if start >= 0 else None
                if match:
                    _accept(_SECRET_TOKEN_RULE, text, match, spans)
        if "=" not in text and ":" not in text:
            return
        lowered = text.lower()
        if len(lowered) != len(text):  # lower-casing moved offsets: scan the slow way
            for rule in (_SECRET_ASSIGN_RULE, _PASSWORD_RULE):
                for match in rule.pattern.finditer(text):
                    _accept(rule, text, match, spans)
            return
        for rule, keywords in (
            (_SECRET_ASSIGN_RULE, _ASSIGN_KEYWORDS),
            (_PASSWORD_RULE, _PASSWORD_KEYWORDS),
        ):
            for keyword in keywords:
                for hit in _literal_hits(lowered, keyword):
                    match = rule.pattern.match(text, hit)
                    if match:
                        _accept(rule, text, match, spans)

    def _find_exhaustive(self, text: str) -> list[Span]:
        """Reference for tests: every pattern over the whole text, no triggers."""
        spans: list[Span] = []
        for rule in _ALL_RULES:
            if rule.type in self._types:
                for match in rule.pattern.finditer(text):
                    _accept(rule, text, match, spans)
        if TOKEN_URL in self._types:
            spans.extend(_url_spans(text))
        return spans

    def __repr__(self) -> str:
        return f"RegexDetector(types={sorted(self._types)})"


_PRESIDIO_TYPES: dict[str, str] = {
    "EMAIL_ADDRESS": EMAIL,
    "PHONE_NUMBER": PHONE,
    "IP_ADDRESS": IP,
    "CREDIT_CARD": CARD,
    "IBAN_CODE": IBAN,
    "US_SSN": NATIONAL_ID,
    "US_ITIN": NATIONAL_ID,
    "US_PASSPORT": NATIONAL_ID,
    "US_DRIVER_LICENSE": NATIONAL_ID,
    "UK_NHS": NATIONAL_ID,
    "UK_NINO": NATIONAL_ID,
    "ES_NIF": NATIONAL_ID,
    "ES_NIE": NATIONAL_ID,
    "IT_FISCAL_CODE": NATIONAL_ID,
    "IN_AADHAAR": NATIONAL_ID,
    "IN_PAN": NATIONAL_ID,
    "SG_NRIC_FIN": NATIONAL_ID,
    "AU_TFN": NATIONAL_ID,
    "PL_PESEL": NATIONAL_ID,
}
"""Presidio entity types with a built-in equivalent; others keep Presidio's name."""

PRESIDIO_INSTALL_HINT = (
    "PresidioDetector needs Presidio, which is not installed: "
    "pip install presidio-analyzer (and a spaCy model, e.g. "
    "python -m spacy download en_core_web_lg)"
)


class PresidioDetector(Detector):
    """Presidio's analyzer behind the :class:`Detector` interface (optional dependency).

    Presidio entity types with a built-in equivalent are mapped to it
    (``EMAIL_ADDRESS`` to ``EMAIL``, ``US_SSN`` to ``NATIONAL_ID``, …); others keep
    Presidio's name (``PERSON``, ``LOCATION``). ``analyzer`` may be any object with
    Presidio's ``analyze(text=, language=, entities=, score_threshold=)``; without one
    a default ``presidio_analyzer.AnalyzerEngine`` is built, and a missing Presidio
    raises :class:`PresidioUnavailableError` saying how to install it.
    """

    def __init__(
        self,
        *,
        language: str = "en",
        entities: Sequence[str] | None = None,
        score_threshold: float = 0.5,
        analyzer: Any = None,
    ) -> None:
        if analyzer is None:
            try:
                presidio = importlib.import_module("presidio_analyzer")
            except ImportError as exc:
                raise PresidioUnavailableError(PRESIDIO_INSTALL_HINT) from exc
            analyzer = presidio.AnalyzerEngine()
        self._analyzer = analyzer
        self._language = language
        self._entities = list(entities) if entities is not None else None
        self._threshold = score_threshold

    def find(self, text: str) -> list[Span]:
        """Presidio's results at or above the score threshold, as spans."""
        results = self._analyzer.analyze(
            text=text,
            language=self._language,
            entities=self._entities,
            score_threshold=self._threshold,
        )
        spans: list[Span] = []
        for result in results:
            start, end = int(result.start), int(result.end)
            if float(result.score) < self._threshold or not 0 <= start < end <= len(text):
                continue
            entity = str(result.entity_type).upper()
            spans.append(Span(start, end, _PRESIDIO_TYPES.get(entity, entity)))
        return spans

    def __repr__(self) -> str:
        return f"PresidioDetector(language={self._language!r}, threshold={self._threshold})"


# --- redaction ---------------------------------------------------------------------------------


def _normalise(kind: str, raw: str) -> str:
    if kind == EMAIL:
        return raw.lower()
    if kind in (PHONE, CARD):
        digits = _digits(raw)
        return ("+" + digits) if raw.lstrip().startswith("+") else digits
    if kind in (IBAN, NATIONAL_ID):
        return "".join(char for char in raw if char.isalnum()).upper()
    if kind == IP:
        try:
            return ipaddress.ip_address(raw).compressed
        except ValueError:
            return raw
    return raw


@dataclass(frozen=True)
class RedactionReport:
    """What one :meth:`Redactor.redact_jsonl` call replaced: counts only, never values.

    ``counts`` is the number of replaced occurrences per type, ``distinct`` the number
    of different values per type among them; ``lines_touched`` counts the lines with
    at least one replacement out of ``lines_total`` JSON lines.
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    distinct: Mapping[str, int] = field(default_factory=dict)
    lines_total: int = 0
    lines_touched: int = 0

    @property
    def total(self) -> int:
        """All replaced occurrences."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: counts per type, distinct values per type, lines."""
        return {
            "counts": dict(sorted(self.counts.items())),
            "distinct": dict(sorted(self.distinct.items())),
            "lines_total": self.lines_total,
            "lines_touched": self.lines_touched,
            "total": self.total,
        }

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={count}" for kind, count in sorted(self.counts.items()))
        return (
            f"RedactionReport(lines_total={self.lines_total}, "
            f"lines_touched={self.lines_touched}, counts={{{counts}}})"
        )

    __str__ = __repr__


class Redactor:
    """Replace personal data with typed placeholders, consistently across one dataset.

    ``detectors`` default to one :class:`RegexDetector`; ``types`` limits which types
    are replaced (default: every type the detectors report). Keep one Redactor per
    dataset: its placeholder map is what makes ``<EMAIL_1>`` the same person on every
    line. The map is never part of a report, a repr or a log; :meth:`placeholders` is
    the only way to read it, for an owner who wants to keep it locally.
    """

    def __init__(
        self,
        detectors: Sequence[Detector] | None = None,
        types: Iterable[str] | None = None,
    ) -> None:
        self._detectors: tuple[Detector, ...] = (
            (RegexDetector(),) if detectors is None else tuple(detectors)
        )
        if not self._detectors:
            raise ValueError("a Redactor needs at least one detector")
        self._types = None if types is None else frozenset(types)
        for kind in self._types or ():
            if not _TYPE_NAME.match(kind):
                raise ValueError(f"type names are upper-case identifiers, got {kind!r}")
        # The built-in patterns never match across a blank line (PEM blocks aside), so the
        # spans of a line's strings joined by blank lines are the spans of each string:
        # with only built-in detectors, a line needs one search, not one per string.
        self._whole_lines = all(type(d) is RegexDetector for d in self._detectors)
        self._map: dict[tuple[str, str], str] = {}
        self._next: Counter[str] = Counter()

    def spans(self, text: str) -> list[Span]:
        """The non-overlapping spans :meth:`redact_text` replaces, left to right."""
        found = [
            span
            for detector in self._detectors
            for span in detector.find(text)
            if self._types is None or span.type in self._types
        ]
        if not found:
            return []
        if "<" in text:
            protected = [m.span() for m in PLACEHOLDER.finditer(text)]
            if protected:
                found = [s for s in found if not _overlaps_any(s, protected)]
        return _resolve(found) if found else []

    def redact_text(self, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        return self._redact(text, Counter(), {})

    def redact_jsonl(self, data: bytes) -> tuple[bytes, RedactionReport]:
        """Redact every string value of every JSON line; keys and other values stay.

        Blank lines and lines without a replacement are kept byte for byte; a changed
        line is re-serialised with ``json.dumps`` (UTF-8, same line ending).
        A line that is not UTF-8 JSON raises :class:`RedactionError` naming its number.
        """
        counts: Counter[str] = Counter()
        seen: dict[str, set[str]] = {}
        out: list[bytes] = []
        total = touched = 0
        bom = data.startswith(b"\xef\xbb\xbf")
        lines = data[3:].split(b"\n") if bom else data.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                out.append(line)
                continue
            total += 1
            try:
                value = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                raise RedactionError(f"line {number} is not valid UTF-8") from None
            except json.JSONDecodeError as exc:
                raise RedactionError(f"line {number} is not valid JSON ({exc.msg})") from None
            found: Iterator[list[Span]] | None = None
            if self._whole_lines:  # one search over the line's strings instead of one each
                strings = _strings(value, [])
                spans = self.spans("\n\n".join(strings))
                if not spans:
                    out.append(line)
                    continue
                per_string = _split_spans(spans, strings)
                found = None if per_string is None else iter(per_string)
            before = sum(counts.values())
            redacted = self._walk(value, counts, seen, found)
            if sum(counts.values()) == before:
                out.append(line)
                continue
            touched += 1
            text = json.dumps(redacted, ensure_ascii=False)
            try:
                encoded = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: keep it escaped
                encoded = json.dumps(redacted).encode("ascii")
            out.append(encoded + (b"\r" if line.endswith(b"\r") else b""))
        report = RedactionReport(
            counts=dict(sorted(counts.items())),
            distinct={kind: len(values) for kind, values in sorted(seen.items())},
            lines_total=total,
            lines_touched=touched,
        )
        logger.info("redaction: %s", report)
        return (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(out), report

    def placeholders(self) -> dict[str, tuple[str, str]]:
        """Placeholder to (type, normalised raw value): sensitive, keep it with the data."""
        return {placeholder: key for key, placeholder in self._map.items()}

    def __repr__(self) -> str:
        return f"Redactor(detectors={list(self._detectors)!r}, values={len(self._map)})"

    def _walk(
        self,
        value: Any,
        counts: Counter[str],
        seen: dict[str, set[str]],
        found: Iterator[list[Span]] | None,
    ) -> Any:
        """Redact the strings in ``value``; ``found``: their spans, if already searched."""
        if isinstance(value, str):
            return self._redact(value, counts, seen, None if found is None else next(found))
        if isinstance(value, list):
            return [self._walk(item, counts, seen, found) for item in value]
        if isinstance(value, dict):
            return {key: self._walk(item, counts, seen, found) for key, item in value.items()}
        return value

    def _redact(
        self,
        text: str,
        counts: Counter[str],
        seen: dict[str, set[str]],
        found: list[Span] | None = None,
    ) -> str:
        # A value glued to a longer one can hide from the patterns until its neighbour is a
        # placeholder ("+1 415 555 0132 085-83-7737" is too many digits for one phone), so
        # the lines around each replacement are searched again until nothing more is found.
        # That also makes redaction idempotent.
        spans = self.spans(text) if found is None else found
        for _ in range(_MAX_ROUNDS):
            if not spans:
                break
            text, placed = self._replace(text, spans, counts, seen)
            spans = []
            lines = ((_line_start(text, a - 320), _line_end(text, b)) for a, b in placed)
            for start, end in _windows(lines, len(text)):
                spans += [
                    Span(span.start + start, span.end + start, span.type)
                    for span in self.spans(text[start:end])
                ]
        return text

    def _replace(
        self, text: str, spans: list[Span], counts: Counter[str], seen: dict[str, set[str]]
    ) -> tuple[str, list[tuple[int, int]]]:
        pieces: list[str] = []
        placed: list[tuple[int, int]] = []
        cursor = length = 0
        for span in spans:
            placeholder = self._placeholder(span.type, text[span.start : span.end])
            before = text[cursor : span.start]
            pieces += (before, placeholder)
            length += len(before)
            placed.append((length, length + len(placeholder)))
            length += len(placeholder)
            cursor = span.end
            counts[span.type] += 1
            seen.setdefault(span.type, set()).add(placeholder)
        pieces.append(text[cursor:])
        return "".join(pieces), placed

    def _placeholder(self, kind: str, raw: str) -> str:
        key = (kind, _normalise(kind, raw))
        placeholder = self._map.get(key)
        if placeholder is None:
            self._next[kind] += 1
            placeholder = f"<{kind}_{self._next[kind]}>"
            self._map[key] = placeholder
        return placeholder


def _strings(value: Any, out: list[str]) -> list[str]:
    """Every string value (not key) in a parsed JSON value, in document order."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    return out


def _split_spans(spans: list[Span], strings: list[str]) -> list[list[Span]] | None:
    """Spans of the strings joined by blank lines, split per string.

    None if a span crosses from one string to another.
    """
    per_string: list[list[Span]] = [[] for _ in strings]
    starts: list[int] = []
    position = 0
    for string in strings:
        starts.append(position)
        position += len(string) + 2
    index = 0
    for span in spans:  # sorted, as Redactor.spans returns them
        while index + 1 < len(strings) and span.start >= starts[index + 1]:
            index += 1
        offset = starts[index]
        if span.end > offset + len(strings[index]):
            return None  # a PEM block from one string to another: search string by string
        per_string[index].append(Span(span.start - offset, span.end - offset, span.type))
    return per_string


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, max(0, index)) + 1


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _overlaps_any(span: Span, regions: Sequence[tuple[int, int]]) -> bool:
    return any(span.start < end and start < span.end for start, end in regions)


def _resolve(spans: list[Span]) -> list[Span]:
    """Merge overlapping spans; each merged region takes its longest member's type."""
    spans.sort()
    resolved: list[Span] = []
    cluster = [spans[0]]
    end = spans[0].end
    for span in spans[1:]:
        if span.start < end:
            cluster.append(span)
            end = max(end, span.end)
            continue
        resolved.append(_merge(cluster, end))
        cluster, end = [span], span.end
    resolved.append(_merge(cluster, end))
    return resolved


def _merge(cluster: list[Span], end: int) -> Span:
    best = min(cluster, key=lambda s: (s.start - s.end, _PRIORITY.get(s.type, 50), s.type))
    return Span(cluster[0].start, end, best.type)


def redact_jsonl(data: bytes, redactor: Redactor | None = None) -> tuple[bytes, RedactionReport]:
    """Redact JSONL bytes with ``redactor`` (a fresh built-in one by default)."""
    return (redactor or Redactor()).redact_jsonl(data)
