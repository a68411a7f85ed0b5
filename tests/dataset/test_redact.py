"""The PII redactor: precision and recall on a generated, labelled corpus, and its contracts.

The corpus is generated from a fixed seed: sentences of ordinary text and decoys (dates,
times, version numbers, order numbers, prices, 16-digit numbers that fail Luhn,
IBAN-shaped strings that fail mod-97, short hex, MAC addresses, C++ scopes, URLs
without secrets) with personal data of every built-in type embedded at recorded
offsets. A labelled span counts as found when a detected span of the same type
overlaps it; a detected span counts as correct when it overlaps a labelled span of
the same type.

Decision recorded here: a dotted quad with every part at most 255 is an IP address
even when the text calls it a version (``version 1.2.3.4``); the corpus therefore
labels such strings as IP, and its version decoys are ``v1.2.3.4`` (glued to a
letter), three-part versions and versions with a part above 255.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import string
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.dataset.redact import (
    BUILTIN_TYPES,
    CARD,
    EMAIL,
    HOME_PATH,
    IBAN,
    IP,
    NATIONAL_ID,
    PHONE,
    PLACEHOLDER,
    SECRET,
    TOKEN_URL,
    Detector,
    PresidioDetector,
    PresidioUnavailableError,
    RedactionError,
    RedactionReport,
    Redactor,
    RegexDetector,
    Span,
    iban_valid,
    luhn_valid,
    redact_jsonl,
)

Label = tuple[int, int, str]
Piece = tuple[str, list[Label]]
"""A generated value and its labels, offsets relative to the value."""

# --- value generators ----------------------------------------------------------------------

FIRST = ["alice", "bob", "carol", "dmitri", "elena", "farah", "gunnar", "hiro", "ines", "jamal"]
FIRST += ["kofi", "lena", "mateo", "nadia", "oscar", "priya", "quinn", "rosa", "sven", "tomasz"]
LAST = ["smith", "garcia", "nguyen", "mueller", "okafor", "rossi", "kowalski", "tanaka", "silva"]
DOMAINS = [
    "example.com",
    "mail.example.org",
    "corp.example.co.uk",
    "uni-example.edu",
    "example.io",
    "post.example.de",
]
HOSTS = ["api.example.com", "cdn.example.net", "s3.eu-west-1.example.com", "login.example.org"]
ALNUM = string.ascii_letters + string.digits


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def token(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    """Random token with at least one digit and one letter, like real keys."""
    letters = [char for char in alphabet if char.isalpha()]
    body = list(chars(rng, alphabet, n - 2) + rng.choice(string.digits) + rng.choice(letters))
    rng.shuffle(body)
    return "".join(body)


def whole(kind: str, value: str) -> Piece:
    return value, [(0, len(value), kind)]


def gen_email(rng: random.Random) -> Piece:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first}{rng.randint(1, 99)}",
            f"{first[0]}{last}",
            f"{first}+{rng.choice(['news', 'work', 'git'])}",
            f"{first}_{last}",
            f"{first.upper()}.{last.capitalize()}",
        ]
    )
    return whole(EMAIL, f"{local}@{rng.choice(DOMAINS)}")


def gen_phone(rng: random.Random) -> Piece:
    area = str(rng.randint(2, 9)) + digits(rng, 2)
    exchange = str(rng.randint(2, 9)) + digits(rng, 2)
    line = digits(rng, 4)
    formats = [
        f"+1 {area} {exchange} {line}",
        f"+1-{area}-{exchange}-{line}",
        f"+1 ({area}) {exchange}-{line}",
        f"+1{area}{exchange}{line}",
        f"({area}) {exchange}-{line}",
        f"{area}-{exchange}-{line}",
        f"{area}.{exchange}.{line}",
        f"1-{area}-{exchange}-{line}",
        f"+44 20 {digits(rng, 4)} {digits(rng, 4)}",
        f"+44 7{digits(rng, 3)} {digits(rng, 6)}",
        f"020 {digits(rng, 4)} {digits(rng, 4)}",
        f"07{digits(rng, 3)} {digits(rng, 6)}",
        f"+49 30 {digits(rng, 8)}",
        f"+49 (0)30 {digits(rng, 7)}",
        f"030 {digits(rng, 8)}",
        f"+33 1 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
        f"01 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
        f"+91 9{digits(rng, 4)} {digits(rng, 5)}",
        f"+81 3-{digits(rng, 4)}-{digits(rng, 4)}",
        f"+61 2 {digits(rng, 4)} {digits(rng, 4)}",
        f"+34 6{digits(rng, 2)} {digits(rng, 3)} {digits(rng, 3)}",
    ]
    return whole(PHONE, rng.choice(formats))


def gen_ip(rng: random.Random) -> Piece:
    choice = rng.randrange(7)
    if choice <= 2:
        octets = [
            rng.randint(1, 223),
            rng.randint(0, 255),
            rng.randint(0, 255),
            rng.randint(1, 254),
        ]
        return whole(IP, ".".join(map(str, octets)))
    if choice == 3:  # full form
        groups = [format(rng.randrange(0x10000), rng.choice(["x", "04x", "X"])) for _ in range(8)]
        return whole(IP, ":".join(groups))
    if choice == 4:  # compressed, documentation prefix
        tail = ":".join(format(rng.randrange(1, 0x10000), "x") for _ in range(rng.randint(1, 3)))
        return whole(IP, f"2001:db8::{tail}")
    if choice == 5:  # link-local, sometimes with a zone
        tail = ":".join(format(rng.randrange(1, 0x10000), "x") for _ in range(2))
        zone = rng.choice(["", "%eth0", "%en0"])
        return whole(IP, f"fe80::{tail}{zone}")
    v4 = ipaddress.IPv4Address(rng.randrange(1 << 24, 224 << 24))
    return whole(IP, f"::ffff:{v4}")


def luhn_complete(partial: str) -> str:
    for check in string.digits:
        if luhn_valid(partial + check):
            return partial + check
    raise AssertionError("unreachable")


CARD_SCHEMES = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("34", 15)]
CARD_SCHEMES += [("37", 15), ("6011", 16), ("65", 16), ("35", 16), ("36", 14)]


def card_number(rng: random.Random) -> str:
    prefix, length = rng.choice(CARD_SCHEMES)
    return luhn_complete(prefix + digits(rng, length - len(prefix) - 1))


def group_card(rng: random.Random, number: str) -> str:
    separator = rng.choice([" ", "-", ""])
    if len(number) == 15:
        return separator.join([number[:4], number[4:10], number[10:]])
    if len(number) == 16:
        return separator.join(number[i : i + 4] for i in range(0, 16, 4))
    return number


def gen_card(rng: random.Random) -> Piece:
    return whole(CARD, group_card(rng, card_number(rng)))


IBAN_SHAPES = {  # country: BBAN as (alphabet, count) runs
    "DE": [(string.digits, 18)],
    "GB": [(string.ascii_uppercase, 4), (string.digits, 14)],
    "FR": [(string.digits, 10), (string.ascii_uppercase + string.digits, 11), (string.digits, 2)],
    "NL": [(string.ascii_uppercase, 4), (string.digits, 10)],
    "ES": [(string.digits, 20)],
    "IT": [(string.ascii_uppercase, 1), (string.digits, 10), (string.digits, 12)],
    "BE": [(string.digits, 12)],
    "CH": [(string.digits, 5), (string.ascii_uppercase + string.digits, 12)],
}


def iban_with_check(country: str, bban: str, check: int | None = None) -> str:
    if check is None:
        numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
        check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def space_iban(rng: random.Random, iban: str) -> str:
    if rng.random() < 0.5:
        return iban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def random_bban(rng: random.Random, country: str) -> str:
    return "".join(chars(rng, alphabet, count) for alphabet, count in IBAN_SHAPES[country])


def gen_iban(rng: random.Random) -> Piece:
    country = rng.choice(sorted(IBAN_SHAPES))
    iban = iban_with_check(country, random_bban(rng, country))
    assert iban_valid(iban)
    return whole(IBAN, space_iban(rng, iban))


NINO_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"


def gen_national_id(rng: random.Random) -> Piece:
    choice = rng.randrange(4)
    if choice <= 1:
        area = rng.choice([n for n in range(1, 900) if n != 666])
        value = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    elif choice == 2:
        prefix = rng.choice(NINO_FIRST) + rng.choice(NINO_SECOND)
        while prefix in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
            prefix = rng.choice(NINO_FIRST) + rng.choice(NINO_SECOND)
        number, suffix = digits(rng, 6), rng.choice("ABCD")
        if rng.random() < 0.5:
            value = f"{prefix}{number}{suffix}"
        else:
            value = f"{prefix} {number[:2]} {number[2:4]} {number[4:]} {suffix}"
    else:
        sin = luhn_complete(rng.choice("1234567") + digits(rng, 7))
        separator = rng.choice(["-", " "])
        value = separator.join([sin[:3], sin[3:6], sin[6:]])
    return whole(NATIONAL_ID, value)


def gen_secret(rng: random.Random) -> Piece:
    choice = rng.randrange(15)
    urlsafe = ALNUM + "_-"
    if choice == 0:
        return whole(SECRET, "sk-" + token(rng, 48))
    if choice == 1:
        return whole(SECRET, "sk-proj-" + token(rng, 40, urlsafe) + token(rng, 8))
    if choice == 2:
        return whole(SECRET, "sk_live_" + token(rng, 24))
    if choice == 3:
        return whole(SECRET, "ghp_" + token(rng, 36))
    if choice == 4:
        return whole(SECRET, "github_pat_" + token(rng, 22) + "_" + token(rng, 59))
    if choice == 5:
        return whole(SECRET, "AKIA" + token(rng, 16, string.ascii_uppercase + string.digits))
    if choice == 6:
        kind = rng.choice("bp")
        return whole(SECRET, f"xox{kind}-{digits(rng, 12)}-{digits(rng, 12)}-{token(rng, 24)}")
    if choice == 7:
        return whole(SECRET, "AIza" + token(rng, 33, urlsafe) + token(rng, 2))
    if choice == 8:
        return whole(SECRET, "glpat-" + token(rng, 20))
    if choice == 9:
        jwt = f"eyJhbGciOiJIUzI1NiJ9.eyJ{token(rng, 30, urlsafe)}x.{token(rng, 43, urlsafe)}x"
        return whole(SECRET, jwt)
    if choice in (10, 11):  # key=value assignments: only the value is secret
        name = rng.choice(
            ["api_key", "API_KEY", "token", "auth_token", "client_secret", "SECRET_KEY", "apiKey"]
        )
        value = token(rng, rng.choice([32, 40]), "0123456789abcdef")
        if choice == 11:
            value = token(rng, 40, ALNUM + "+/") + "=="
        template = rng.choice(["{}={}", '{}: "{}"', "{} = '{}'", '"{}": "{}"'])
        before, after = template.split("{}", 1)[0], template.split("{}", 2)[1]
        text = template.format(name, value)
        start = len(before) + len(name) + len(after)
        return text, [(start, start + len(value), SECRET)]
    # passwords
    name = rng.choice(["password", "PASSWORD", "db_password", "passwd", "pwd"])
    value = token(rng, rng.randint(8, 16), ALNUM + "!#$%*-_+") + rng.choice("!#$%*")
    template = rng.choice(["{}={}", "{}: {}", '{}: "{}"', '"{}": "{}"'])
    before, after = template.split("{}", 1)[0], template.split("{}", 2)[1]
    text = template.format(name, value)
    start = len(before) + len(name) + len(after)
    return text, [(start, start + len(value), SECRET)]


WIN_USERS = ["alice", "Bob", "carol.smith", "j_doe", "John Smith", "hiro42"]
POSIX_USERS = ["alice", "bob", "carol.smith", "j_doe", "dev-ops", "hiro42", "Priya"]


def gen_home_path(rng: random.Random) -> Piece:
    choice = rng.randrange(4)
    if choice == 0:
        prefix = f"/home/{rng.choice(POSIX_USERS)}"
        rest = rng.choice(["/projects/app/main.py", "/.ssh/id_ed25519", "/data/train.jsonl", ""])
    elif choice == 1:
        prefix = f"/Users/{rng.choice(POSIX_USERS).capitalize()}"
        rest = rng.choice(["/Desktop/notes.txt", "/Library/Caches", "/src/cotune", ""])
    elif choice == 2:
        prefix = f"C:\\Users\\{rng.choice(WIN_USERS)}"
        rest = rng.choice(["\\Documents\\report.docx", "\\AppData\\Local\\Temp", "\\.cache"])
    else:
        prefix = f"D:/Users/{rng.choice(WIN_USERS)}"
        rest = rng.choice(["/Downloads/data.csv", "/repos/app"])
    return prefix + rest, [(0, len(prefix), HOME_PATH)]


def gen_token_url(rng: random.Random) -> Piece:
    host = rng.choice(HOSTS)
    path = rng.choice(["/v1/callback", "/download/file.zip", "/oauth/authorize", "/reset"])
    value = token(rng, rng.randint(16, 40), ALNUM + "-_~")
    if rng.random() < 0.15:  # credentials in the authority
        prefix = f"https://{rng.choice(FIRST)}:"
        start = len(prefix)
        return f"{prefix}{value}@{host}{path}", [(start, start + len(value), TOKEN_URL)]
    name = rng.choice(
        [
            *("token", "access_token", "api_key", "key", "sig", "signature", "password"),
            *("X-Amz-Signature", "refresh_token", "client_secret", "auth"),
        ]
    )
    before = rng.choice(["", "user_id=42&", "lang=en&page=2&"])
    after = rng.choice(["", "&expires=3600", "&lang=en"])
    separator = "#" if name == "access_token" and rng.random() < 0.5 else "?"
    head = f"https://{host}{path}{separator}{before}{name}="
    return f"{head}{value}{after}", [(len(head), len(head) + len(value), TOKEN_URL)]


GENERATORS: dict[str, Callable[[random.Random], Piece]] = {
    EMAIL: gen_email,
    PHONE: gen_phone,
    IP: gen_ip,
    CARD: gen_card,
    IBAN: gen_iban,
    NATIONAL_ID: gen_national_id,
    SECRET: gen_secret,
    HOME_PATH: gen_home_path,
    TOKEN_URL: gen_token_url,
}

CONTEXTS: dict[str, list[str]] = {
    EMAIL: ["Please write to {} before Friday.", "Contact: {}", "cc {}, thanks.", "<{}>"],
    PHONE: ["Call me on {} after lunch.", "Phone: {}.", "tel {} (mobile)", "reach her at {}"],
    IP: ["The request came from {} at noon.", "ssh into {} and restart it", "peer={}"],
    CARD: ["Card number {} was declined.", "Charge {} for the renewal.", "card: {}"],
    IBAN: ["Wire the deposit to {} by Monday.", "IBAN: {}", "Account {} (savings)."],
    NATIONAL_ID: ["SSN on file: {}.", "Her ID number is {} per the form.", "id {} verified"],
    SECRET: ["export {}", "Use {} for the staging API.", "config: {}", "leaked {} yesterday"],
    HOME_PATH: ["The log is at {}.", "cd {} && make", "Saved to {} earlier"],
    TOKEN_URL: ["Open {} to continue.", "Link: {}", "curl '{}' -o out"],
}
VERSION_CONTEXT = "Upgrade to version {} today."
"""Documented decision: a dotted quad after "version" is still redacted as an IP address."""


def decoys(rng: random.Random) -> list[str]:
    """Non-PII text that looks like PII to a naive detector."""
    bad_card = card_number(rng)
    bad_card = bad_card[:-1] + str((int(bad_card[-1]) + rng.randint(1, 9)) % 10)
    country = rng.choice(sorted(IBAN_SHAPES))
    good = iban_with_check(country, random_bban(rng, country))
    bad_iban = iban_with_check(country, good[4:], (int(good[2:4]) + rng.randint(1, 50)) % 97 + 2)
    if iban_valid(bad_iban):  # the altered check digits happen to pass: make it fail
        bad_iban = iban_with_check(country, good[4:], (int(good[2:4]) + 1) % 100)
    return [
        f"on {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"dated {rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}",
        f"by {rng.randint(1, 12):02d}.{rng.randint(1, 28):02d}.{rng.randint(1990, 2030)}",
        f"at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        f"at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        f"stamp 2024-03-{rng.randint(10, 28)}T{rng.randint(10, 23)}:30:00Z",
        f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
        f"version {rng.randint(1, 12)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}",
        f"build 10.0.{rng.randint(19000, 22999)}.{rng.randint(1000, 4000)}",
        f"Python 3.{rng.randint(8, 13)}.{rng.randint(0, 12)}",
        f"order #{digits(rng, 8)}",
        f"ref ORD-{rng.randint(2019, 2026)}-{digits(rng, 6)}",
        f"ticket {digits(rng, 4)}-{digits(rng, 4)}",
        f"number {group_card(rng, bad_card)}",
        f"account {space_iban(rng, bad_iban)}",
        f"commit {chars(rng, '0123456789abcdef', 7)}",
        f"sha {chars(rng, '0123456789abcdef', 40)}",
        f"colour #{chars(rng, '0123456789abcdef', 6)}",
        f"flags 0x{chars(rng, '0123456789abcdef', 2)}",
        f"uuid {chars(rng, '0123456789abcdef', 8)}-{chars(rng, '0123456789abcdef', 4)}-4a1b-9c2d-"
        f"{chars(rng, '0123456789abcdef', 12)}",
        f"costs ${rng.randint(1, 9)},{digits(rng, 3)}.{digits(rng, 2)}",
        f"or €{rng.randint(1, 999)}.{digits(rng, 2)}",
        f"population {rng.randint(1, 999)},{digits(rng, 3)},{digits(rng, 3)}",
        f"{rng.randint(1, 99)}% of {rng.randint(100, 999)} users",
        f"coordinates {rng.uniform(-90, 90):.4f}, {rng.uniform(-180, 180):.4f}",
        f"score {rng.randint(0, 40)}-{rng.randint(0, 40)}",
        f"pages {rng.randint(1, 300)}-{rng.randint(301, 600)}",
        f"ISBN 978-{rng.randint(0, 9)}-{digits(rng, 2)}-{digits(rng, 6)}-{rng.randint(0, 9)}",
        f"ZIP {digits(rng, 5)}",
        f"ext. {digits(rng, 4)}",
        f"MAC {':'.join(chars(rng, '0123456789ABCDEF', 2) for _ in range(6))}",
        "std::vector<int> and a[1::2]",
        f"ratio {rng.choice(['16:9', '4:3', '21:9'])}",
        f"see https://docs.example.com/guide?page={rng.randint(1, 9)}&sort=asc#part-2",
        "https://example.com/home/index.html",
        "/usr/local/bin/python3 and /var/log/syslog",
        "C:\\Program Files\\App\\app.exe",
        "the /home partition and ~/.bashrc",
        "C:\\Users\\Public\\Desktop",
        "the key point is the token budget",
        "Password: reset it through the portal",
        "a password reset link and a secret recipe",
        "key: value pairs",
        "user@localhost or @mention",
        f"room {rng.randint(100, 999)}",
        f"call {rng.choice(['911', '112', '999'])}",
        f"SSN 000-{digits(rng, 2)}-{digits(rng, 4)} is not valid",
        f"AKIA{chars(rng, string.ascii_uppercase, 8)} is too short",
        f"sk-{chars(rng, ALNUM, 6)} is too short",
        f"approx {rng.randint(1, 9)}.{digits(rng, 2)}e-{rng.randint(1, 9)}",
        # hard decoys: shapes the detector cannot tell apart, expected to cost precision
        f"serial 0{digits(rng, 3)}-{digits(rng, 4)}-{digits(rng, 4)}",
        f"sequence {digits(rng, 3)} {digits(rng, 3)} {digits(rng, 3)}",
        f"cache_key=user_profile_v{rng.randint(2, 9)}_{rng.randint(2019, 2026)}",
        f"timestamp {rng.randint(1_600_000_000, 1_800_000_000)}",
        f"tracking 1Z{chars(rng, string.ascii_uppercase + string.digits, 16)}",
    ]


FILLER = [
    "The quarterly review is scheduled for next week.",
    "We trained the adapter for three epochs.",
    "Nothing unusual showed up in the evaluation.",
    "The committee approved the budget.",
    "She moved the meeting to the afternoon.",
    "Results improved after the data was cleaned.",
    "Remember to rotate the logs.",
    "The weather in Lisbon was mild.",
]


@dataclass
class Sample:
    text: str = ""
    labels: list[Label] = field(default_factory=list)

    def add(self, text: str, labels: list[Label] | None = None) -> None:
        for start, end, kind in labels or []:
            self.labels.append((len(self.text) + start, len(self.text) + end, kind))
        self.text += text

    def add_in_context(self, template: str, piece: Piece) -> None:
        before, after = template.split("{}")
        self.add(before)
        self.add(*piece)
        self.add(after)


def build_corpus(seed: int, sentences: int) -> list[Sample]:
    rng = random.Random(seed)
    corpus: list[Sample] = []
    types = list(BUILTIN_TYPES)
    for index in range(sentences):
        # every type appears once in each run of nine sentences; every tenth has no PII
        kinds = [types[index % len(types)]] if index % 10 else []
        kinds += rng.sample(types, rng.choice([0, 0, 1, 2]))
        parts: list[tuple[str, Piece | None]] = []
        for kind in kinds:
            piece = GENERATORS[kind](rng)
            contexts = list(CONTEXTS[kind])
            if kind == IP and ":" not in piece[0]:
                contexts.append(VERSION_CONTEXT)
            parts.append((rng.choice(contexts), piece))
        parts += [(f"Note {d} here.", None) for d in rng.sample(decoys(rng), rng.randint(1, 3))]
        parts.append((rng.choice(FILLER), None))
        rng.shuffle(parts)
        sample = Sample()
        for number, (template, maybe_piece) in enumerate(parts):
            if number:
                sample.add(" ")
            if maybe_piece is None:
                sample.add(template)
            else:
                sample.add_in_context(template, maybe_piece)
        corpus.append(sample)
    return corpus


CORPUS = build_corpus(seed=20240613, sentences=2500)


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# --- precision and recall --------------------------------------------------------------------


def test_corpus_is_large_and_labelled_for_every_type() -> None:
    counts = Counter(kind for sample in CORPUS for _, _, kind in sample.labels)
    assert len(CORPUS) >= 2000
    assert set(counts) == set(BUILTIN_TYPES)
    assert min(counts.values()) >= 150, counts
    for sample in CORPUS:
        for start, end, _ in sample.labels:
            assert 0 <= start < end <= len(sample.text)


def test_precision_and_recall_on_the_labelled_corpus() -> None:
    redactor = Redactor()
    found: Counter[str] = Counter()
    labelled: Counter[str] = Counter()
    true_positive = false_positive = 0
    misses: list[str] = []
    false_positives: list[str] = []
    for sample in CORPUS:
        spans = redactor.spans(sample.text)
        for start, end, kind in sample.labels:
            labelled[kind] += 1
            if any(s.type == kind and overlaps((s.start, s.end), (start, end)) for s in spans):
                found[kind] += 1
            else:
                misses.append(f"{kind}: {sample.text[start:end]!r} in {sample.text!r}")
        for span in spans:
            if any(
                kind == span.type and overlaps((span.start, span.end), (start, end))
                for start, end, kind in sample.labels
            ):
                true_positive += 1
            else:
                false_positive += 1
                false_positives.append(f"{span.type}: {sample.text[span.start : span.end]!r}")
    recall = {kind: found[kind] / labelled[kind] for kind in BUILTIN_TYPES}
    precision = true_positive / (true_positive + false_positive)
    summary = (
        f"recall={ {k: round(v, 4) for k, v in recall.items()} } "
        f"precision={precision:.4f} (tp={true_positive}, fp={false_positive}) "
        f"misses={misses[:5]} false_positives={false_positives[:5]}"
    )
    print(summary)
    assert all(value == 1.0 for value in recall.values()), summary
    assert precision >= 0.95, summary


def test_no_labelled_value_survives_redaction() -> None:
    redactor = Redactor()
    for sample in CORPUS:
        redacted = redactor.redact_text(sample.text)
        for start, end, kind in sample.labels:
            value = sample.text[start:end]
            assert value not in redacted, (kind, value, redacted)


def finds_at_least_a_full_scan(detector: RegexDetector, text: str) -> bool:
    """The triggered scan finds every span one pass of each pattern over the text finds.

    It may find more: it tries each key word, where one ``finditer`` pass skips a
    ``password:`` inside the previous password's value.
    """
    return set(detector._find_exhaustive(text)) <= set(detector.find(text))


def test_triggered_scan_finds_what_a_full_scan_finds() -> None:
    detector = RegexDetector()
    for sample in CORPUS[:800]:
        assert finds_at_least_a_full_scan(detector, sample.text), sample.text
        assert set(detector.find(sample.text)) == set(detector._find_exhaustive(sample.text))
    text = "\n".join(sample.text for sample in CORPUS[:300])
    assert finds_at_least_a_full_scan(detector, text)


# --- validators and single types -----------------------------------------------------------


def test_luhn_and_iban_checks() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000")
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE8937040044053201300")  # one character short


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail Bob.Smith+x@Example.co.uk now", "mail <EMAIL_1> now"),
        ("call +44 20 7946 0958 today", "call <PHONE_1> today"),
        ("from 192.168.1.20, and 2001:db8::8a2e:370:7334.", "from <IP_1>, and <IP_2>."),
        ("v1.2.3.4 and 2.31.0 and 10.0.19045.3803", "v1.2.3.4 and 2.31.0 and 10.0.19045.3803"),
        ("pay 4111 1111 1111 1111, not 4111 1111 1111 1112", "pay <CARD_1>, not 4111 1111 "
         "1111 1112"),
        ("to DE89 3704 0044 0532 0130 00 now", "to <IBAN_1> now"),
        ("ssn 123-45-6789; nino AB 12 34 56 C", "ssn <NATIONAL_ID_1>; nino <NATIONAL_ID_2>"),
        ("password=hunter2 and api_key: 'a1b2c3d4e5f6a7b8c9d0'", "password=<SECRET_1> and "
         "api_key: '<SECRET_2>'"),
        ("AKIAIOSFODNN7EXAMPLE", "<SECRET_1>"),
        ("see /home/alice/src/x.py", "see <HOME_PATH_1>/src/x.py"),
        ("C:\\Users\\John Smith\\Docs", "<HOME_PATH_1>\\Docs"),
        (
            "https://x.example.com/cb?page=2&token=abc123XYZ789&lang=en.",
            "https://x.example.com/cb?page=2&token=<TOKEN_URL_1>&lang=en.",
        ),
        ("https://bob:s3cr3t@db.example.com/x", "https://bob:<TOKEN_URL_1>@db.example.com/x"),
        ("Password: reset it. The key point.", "Password: reset it. The key point."),
        ("Authorization: Bearer abcdef0123456789abcdef", "Authorization: Bearer <SECRET_1>"),
        ("cache_key=user_profile_v2_2024", "cache_key=user_profile_v2_2024"),
        (
            "https://x.example.com/cb#access_token=abc123XYZ789&token_type=bearer",
            "https://x.example.com/cb#access_token=<TOKEN_URL_1>&token_type=bearer",
        ),
        # glued values: the second is found once the first is a placeholder
        ("+1 (677) 918-3417 085-83-7737", "<PHONE_1> <NATIONAL_ID_1>"),
        ("01 35 37 99 07 01 35 37 99 08", "<PHONE_1> <PHONE_2>"),
    ],
)  # fmt: skip
def test_examples(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


# --- placeholders ----------------------------------------------------------------------------


def test_placeholders_are_consistent_across_lines_and_numbered_by_first_appearance() -> None:
    lines = [
        {"text": "From alice@example.com to bob@example.org"},
        {"text": "bob@example.org replied; ALICE@example.com agreed"},
        {"text": "carol@example.net joined, call +1 415 555 0132"},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    out, report = Redactor().redact_jsonl(data)
    texts = [json.loads(line)["text"] for line in out.decode().splitlines()]
    assert texts == [
        "From <EMAIL_1> to <EMAIL_2>",
        "<EMAIL_2> replied; <EMAIL_1> agreed",
        "<EMAIL_3> joined, call <PHONE_1>",
    ]
    assert out.endswith(b"\n")
    assert report.counts == {EMAIL: 5, PHONE: 1}
    assert report.distinct == {EMAIL: 3, PHONE: 1}
    assert (report.lines_total, report.lines_touched) == (3, 3)


def test_same_value_same_placeholder_across_calls_of_one_redactor() -> None:
    redactor = Redactor()
    first = redactor.redact_text("ip 10.1.2.3 and 10.1.2.4")
    second = redactor.redact_text("again 10.1.2.4 then 10.1.2.3 and 10.9.9.9")
    assert first == "ip <IP_1> and <IP_2>"
    assert second == "again <IP_2> then <IP_1> and <IP_3>"
    assert Redactor().redact_text("10.9.9.9") == "<IP_1>"  # a new dataset starts again


def test_types_filter_and_default_detector() -> None:
    text = "alice@example.com from 10.0.0.7"
    assert Redactor(types=[EMAIL]).redact_text(text) == "<EMAIL_1> from 10.0.0.7"
    assert Redactor(detectors=[RegexDetector(types=[IP])]).redact_text(text) == (
        "alice@example.com from <IP_1>"
    )
    with pytest.raises(ValueError, match="no types"):
        RegexDetector(types=["NAME"])
    with pytest.raises(ValueError, match="upper-case"):
        Redactor(types=["email"])


class FixedDetector(Detector):
    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans

    def find(self, text: str) -> list[Span]:
        return list(self.spans)


def test_overlapping_spans_merge_into_one_placeholder() -> None:
    text = "0123456789abcdef"
    detector = FixedDetector(
        [Span(2, 8, PHONE), Span(4, 12, CARD), Span(10, 14, PHONE), Span(15, 16, IP)]
    )
    redactor = Redactor(detectors=[detector])
    assert redactor.spans(text) == [Span(2, 14, CARD), Span(15, 16, IP)]
    assert redactor.redact_text(text) == "01<CARD_1>e<IP_1>"
    # same priority: the longest member names the merged region
    other = Redactor(detectors=[FixedDetector([Span(0, 3, "NAME"), Span(1, 9, "PLACE")])])
    assert other.redact_text(text) == "<PLACE_1>9abcdef"


def test_secret_in_a_url_is_a_token_url_not_nested() -> None:
    text = "https://api.example.com/v1?key=sk-abcdefghijklmnopqrstuvwxyz123456&x=1"
    redacted = Redactor().redact_text(text)
    assert redacted == "https://api.example.com/v1?key=<TOKEN_URL_1>&x=1"
    assert not PLACEHOLDER.search(PLACEHOLDER.sub("", redacted))


def test_existing_placeholders_are_left_alone() -> None:
    text = "token=<SECRET_4> and <EMAIL_12> at /home/<HOME_PATH_1>"
    assert Redactor().redact_text(text) == text


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_keeps_structure_keys_and_non_strings() -> None:
    line = {
        "alice@example.com": "key with an address is untouched",
        "messages": [
            {"role": "user", "content": "my card is 4111-1111-1111-1111", "n": 3},
            {"role": "assistant", "content": "noted", "score": 0.25, "ok": True, "x": None},
        ],
        "nested": [[["call 415-555-0132"]], 12345678901234, 1.5e-07],
    }
    untouched = b'{"text": "nothing here",   "n": 1}'
    data = json.dumps(line).encode() + b"\r\n" + untouched + b"\n\n  \n" + b'["10.0.0.1"]'
    out, report = Redactor().redact_jsonl(data)
    lines = out.split(b"\n")
    assert len(lines) == len(data.split(b"\n"))
    assert lines[0].endswith(b"\r")
    assert lines[1] == untouched  # byte for byte
    assert lines[2:4] == [b"", b"  "]
    first = json.loads(lines[0])
    assert list(first) == list(line)
    assert first["alice@example.com"] == line["alice@example.com"]
    assert first["messages"][0] == {"role": "user", "content": "my card is <CARD_1>", "n": 3}
    assert first["messages"][1] == line["messages"][1]
    assert first["nested"] == [[["call <PHONE_1>"]], 12345678901234, 1.5e-07]
    assert json.loads(lines[4]) == ["<IP_1>"]
    assert report.to_dict() == {
        "counts": {CARD: 1, IP: 1, PHONE: 1},
        "distinct": {CARD: 1, IP: 1, PHONE: 1},
        "lines_total": 3,
        "lines_touched": 2,
        "total": 3,
    }


class UngatedDetector(RegexDetector):
    """The built-in detector under another type: the Redactor then searches string by string."""


def test_one_search_per_line_changes_nothing() -> None:
    lines = []
    for sample in CORPUS[:600]:
        words = sample.text.split(" ")
        cut = len(words) // 2
        lines.append({"a": " ".join(words[:cut]), "b": [" ".join(words[cut:]), 7, None]})
    data = "\n".join(json.dumps(line) for line in lines).encode()
    gated, gated_report = Redactor().redact_jsonl(data)
    ungated, ungated_report = Redactor([UngatedDetector()]).redact_jsonl(data)
    assert gated == ungated
    assert gated_report == ungated_report


def test_private_keys_are_redacted_whole_within_one_string_only() -> None:
    begin, end = "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"
    body = "MIIEowIBAAKCAQEA7bq\nZ9x0Lk3QeHn4m0v2s8w==\n"
    whole = json.dumps({"key": f"{begin}\n{body}{end}", "n": 1}).encode()
    out, report = Redactor().redact_jsonl(whole)
    assert json.loads(out) == {"key": "<SECRET_1>", "n": 1}
    split = json.dumps([f"{begin}\n{body}", f"{end} and alice@example.com"]).encode()
    out, report = Redactor().redact_jsonl(split)  # the joined strings hold a crossing span
    assert json.loads(out) == [f"{begin}\n{body}", f"{end} and <EMAIL_1>"]
    assert report.counts == {EMAIL: 1}


def test_multi_line_text_is_redacted_like_its_lines() -> None:
    texts = [sample.text for sample in CORPUS[:400]]
    by_line = Redactor()
    assert Redactor().redact_text("\n".join(texts)) == "\n".join(
        by_line.redact_text(text) for text in texts
    )


def test_jsonl_is_deterministic() -> None:
    data = "\n".join(json.dumps({"text": s.text}) for s in CORPUS[:300]).encode()
    first, first_report = Redactor().redact_jsonl(data)
    second, second_report = redact_jsonl(data)
    assert first == second
    assert first_report == second_report


def test_bad_lines_raise_without_quoting_them() -> None:
    with pytest.raises(RedactionError, match="line 2 is not valid JSON") as info:
        Redactor().redact_jsonl(b'{"a": 1}\n{"secret": "alice@example.com"\n')
    assert "alice" not in str(info.value)
    with pytest.raises(RedactionError, match="line 1 is not valid UTF-8"):
        Redactor().redact_jsonl(b'"\xff alice@example.com"')


# --- report and logs ---------------------------------------------------------------------------

FIXED_SAMPLE = [
    ("Write to alice@example.com or bob@example.org; alice@example.com again.", {EMAIL: 3}),
    ("Call (415) 555-0132 or +44 20 7946 0958 from 10.0.0.5.", {PHONE: 2, IP: 1}),
    ("Pay 4111 1111 1111 1111 or wire GB82 WEST 1234 5698 7654 32.", {CARD: 1, IBAN: 1}),
    ("SSN 123-45-6789, key ghp_abcdefghijklmnopqrstuvwxyz0123456789.", {NATIONAL_ID: 1, SECRET: 1}),
    (
        "See /home/carol/x and https://h.example.com/?sig=abcdef123456.",
        {HOME_PATH: 1, TOKEN_URL: 1},
    ),
    ("Nothing to see on 2024-03-15 at 14:30, version 2.31.0.", {}),
]
FIXED_RAW = [
    "alice@example.com",
    "bob@example.org",
    "(415) 555-0132",
    "+44 20 7946 0958",
    "10.0.0.5",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "123-45-6789",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "/home/carol",
    "abcdef123456",
]


def test_report_counts_equal_labelled_counts(caplog: pytest.LogCaptureFixture) -> None:
    data = "\n".join(json.dumps({"text": text}) for text, _ in FIXED_SAMPLE).encode()
    expected: Counter[str] = Counter()
    for _, counts in FIXED_SAMPLE:
        expected.update(counts)
    redactor = Redactor()
    with caplog.at_level(logging.DEBUG, logger="cotune.dataset.redact"):
        out, report = redactor.redact_jsonl(data)
    assert dict(report.counts) == dict(expected)
    assert report.total == sum(expected.values())
    assert report.lines_total == len(FIXED_SAMPLE)
    assert report.lines_touched == len(FIXED_SAMPLE) - 1
    assert caplog.records, "the redaction is logged"
    visible = [str(report), repr(report), json.dumps(report.to_dict()), repr(redactor)]
    visible += [record.getMessage() for record in caplog.records]
    visible.append(out.decode())
    for text in visible:
        for raw in FIXED_RAW:
            assert raw not in text
    for text in visible[:-1]:  # the placeholder map is not in the report or the logs
        assert not PLACEHOLDER.search(text)
    assert {f.name for f in RedactionReport.__dataclass_fields__.values()} == {
        "counts",
        "distinct",
        "lines_total",
        "lines_touched",
    }
    mapping = redactor.placeholders()  # only the redactor holds the map
    assert mapping["<EMAIL_1>"] == (EMAIL, "alice@example.com")
    assert "<EMAIL_1>" not in str(report.to_dict())


def test_span_repr_holds_no_value() -> None:
    text = "alice@example.com"
    (span,) = Redactor().spans(text)
    assert "alice" not in repr(span)


# --- properties ----------------------------------------------------------------------------------

FRAGMENT_RNG = random.Random(7)
FRAGMENTS = sorted(
    {GENERATORS[kind](FRAGMENT_RNG)[0] for kind in BUILTIN_TYPES for _ in range(12)}
    | set(decoys(FRAGMENT_RNG))
)
SEPARATORS = [" ", " ", ", ", "\n", "", "/", ":", "=", "@", "-", ".", "<", ">", "(", ")"]

fragment_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(alphabet="ab1:.-@/=<>_ ", max_size=12),
        st.text(max_size=8),
    ),
    max_size=6,
).flatmap(
    lambda parts: st.lists(
        st.sampled_from(SEPARATORS), min_size=len(parts), max_size=len(parts)
    ).map(lambda seps: "".join(p + s for p, s in zip(parts, seps, strict=True)))
)


@given(fragment_text)
def test_redaction_is_idempotent(text: str) -> None:
    redactor = Redactor()
    once = redactor.redact_text(text)
    assert redactor.redact_text(once) == once
    assert Redactor().redact_text(once) == once


@given(fragment_text)
def test_triggered_scan_matches_full_scan(text: str) -> None:
    assert finds_at_least_a_full_scan(RegexDetector(), text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | fragment_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def same_shape(before: Any, after: Any) -> bool:
    if isinstance(before, dict):
        return (
            isinstance(after, dict)
            and list(before) == list(after)
            and all(same_shape(before[k], after[k]) for k in before)
        )
    if isinstance(before, list):
        return (
            isinstance(after, list)
            and len(before) == len(after)
            and all(same_shape(b, a) for b, a in zip(before, after, strict=True))
        )
    if isinstance(before, str):
        return isinstance(after, str)
    return before == after and type(before) is type(after)


@given(st.lists(json_values, min_size=1, max_size=5))
def test_jsonl_output_is_valid_json_with_the_same_shape(values: list[Any]) -> None:
    data = "\n".join(json.dumps(value) for value in values).encode()
    out, report = Redactor().redact_jsonl(data)
    lines = out.split(b"\n")
    assert len(lines) == len(values)
    for value, line in zip(values, lines, strict=True):
        assert same_shape(value, json.loads(line))
    again, second = Redactor().redact_jsonl(out)
    assert again == out
    assert second.total == 0
    assert report.lines_touched <= report.lines_total == len(values)


# --- Presidio -------------------------------------------------------------------------------------


def test_presidio_missing_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # as if not installed
    with pytest.raises(PresidioUnavailableError, match="pip install presidio-analyzer"):
        PresidioDetector()
    with pytest.raises(ImportError):
        PresidioDetector()


@dataclass
class FakeResult:
    entity_type: str
    start: int
    end: int
    score: float


class FakeAnalyzer:
    """Finds fixed strings, the way Presidio's ``AnalyzerEngine.analyze`` reports results."""

    def __init__(self, entities: list[tuple[str, str, float]]) -> None:
        self.entities = entities
        self.calls: list[dict[str, Any]] = []

    def analyze(self, **kwargs: Any) -> list[FakeResult]:
        self.calls.append(kwargs)
        text: str = kwargs["text"]
        results = []
        for entity, value, score in self.entities:
            start = text.find(value)
            if start >= 0:
                results.append(FakeResult(entity, start, start + len(value), score))
        return results


def test_presidio_detector_behind_the_same_interface() -> None:
    text = "Alice Smith wrote to alice@example.com"
    analyzer = FakeAnalyzer(
        [
            ("PERSON", "Alice Smith", 0.85),
            ("EMAIL_ADDRESS", "alice@example.com", 1.0),
            ("LOCATION", "wrote", 0.2),  # below the threshold
        ]
    )
    detector = PresidioDetector(analyzer=analyzer, entities=["PERSON", "EMAIL_ADDRESS"])
    assert isinstance(detector, Detector)
    assert detector.find(text) == [Span(0, 11, "PERSON"), Span(21, 38, EMAIL)]
    assert analyzer.calls[0]["language"] == "en"
    assert analyzer.calls[0]["entities"] == ["PERSON", "EMAIL_ADDRESS"]
    assert analyzer.calls[0]["score_threshold"] == 0.5
    redactor = Redactor(detectors=[RegexDetector(), detector])
    assert redactor.redact_text(text) == "<PERSON_1> wrote to <EMAIL_1>"
    assert Redactor(detectors=[detector], types=[EMAIL]).redact_text(text) == (
        "Alice Smith wrote to <EMAIL_1>"
    )
    assert "Alice" not in repr(detector)
