"""Deterministic synthetic data for demos, tests and benchmarks.

Three contributors with distinct sub-domains, a shared eval set, poisoned
variants, and generic text for pre-training the tiny model.

Every answer is a function of its question, so a model can learn it and the eval loss
measures that learning. Everything comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

SYMPTOMS = {
    "chest pain": "urgent",
    "shortness of breath": "urgent",
    "high fever": "urgent",
    "mild headache": "routine",
    "sore throat": "routine",
    "dry skin": "routine",
    "sprained ankle": "soon",
    "ear pain": "soon",
    "persistent cough": "soon",
}
COUNTRY_SYLLABLES = ("vel", "mor", "qu", "enth", "ar", "don", "bas", "tov", "cor", "rin", "drev")
CITY_SYLLABLES = ("tar", "sk", "orv", "el", "mire", "fall", "kel", "port", "hal", "vane", "sun")


def _made_up_names(syllables: tuple[str, ...], count: int, seed: str) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in names:
            names.append(name)
    return names


CAPITALS = dict(
    zip(
        _made_up_names(COUNTRY_SYLLABLES, 48, "countries"),
        _made_up_names(CITY_SYLLABLES, 48, "cities"),
        strict=True,
    )
)
"""48 made-up countries and their capitals: facts no base model can know."""
UNITS = {"km": ("m", 1000), "kg": ("g", 1000), "hours": ("minutes", 60), "minutes": ("seconds", 60)}
WORDS = [
    "the",
    "a",
    "river",
    "stone",
    "light",
    "morning",
    "garden",
    "window",
    "paper",
    "music",
    "quiet",
    "bright",
    "small",
    "old",
    "new",
    "green",
    "blue",
    "red",
    "cold",
    "warm",
    "city",
    "road",
    "house",
    "tree",
    "cloud",
    "rain",
    "wind",
    "field",
    "book",
    "letter",
    "song",
    "child",
    "friend",
    "teacher",
    "market",
    "bridge",
    "harbor",
    "mountain",
    "forest",
    "village",
    "evening",
    "summer",
    "walks",
    "reads",
    "writes",
    "sings",
    "builds",
    "opens",
    "closes",
    "carries",
    "finds",
    "keeps",
    "watches",
    "follows",
    "slowly",
    "quickly",
    "often",
    "never",
    "always",
    "together",
    "alone",
    "near",
    "far",
    "under",
    "over",
    "between",
]


def _triage(symptom: str, days: int) -> str:
    level = SYMPTOMS[symptom]
    return "soon" if level == "routine" and days > 6 else level


def _clinic_all() -> list[Record]:
    templates = (
        "Patient reports {s} for {d} days. Triage?",
        "Triage level for {s} lasting {d} days?",
        "{d} days of {s}. How urgent?",
    )
    return [
        {
            "messages": [
                {"role": "user", "content": t.format(s=symptom, d=days)},
                {"role": "assistant", "content": f"Triage: {_triage(symptom, days)}."},
            ]
        }
        for symptom in sorted(SYMPTOMS)
        for days in range(1, 10)
        for t in templates
    ]


def _capitals_all() -> list[Record]:
    templates = (
        "What is the capital of {c}?",
        "Name the capital city of {c}.",
        "Which city is the capital of {c}?",
        "{c} has which capital?",
        "Capital of {c}?",
    )
    return [
        {"instruction": t.format(c=country), "input": "", "output": f"{capital}."}
        for country, capital in sorted(CAPITALS.items())
        for t in templates
    ]


def _units_all() -> list[Record]:
    return [
        {
            "instruction": "Convert the quantity.",
            "input": f"{x} {unit} to {target}",
            "output": f"{x * factor} {target}",
        }
        for unit, (target, factor) in sorted(UNITS.items())
        for x in range(2, 100)
    ]


DOMAINS: dict[str, Callable[[], list[Record]]] = {
    "clinic": _clinic_all,
    "capitals": _capitals_all,
    "units": _units_all,
}
"""Sub-domain name -> every distinct example of it. Contributor ``i`` holds domain ``i``."""


SYLLABLES = ("ka", "lo", "mer", "vin", "ta", "ros", "el", "dun", "qua", "bri", "st", "on", "ix")


def _word(rng: random.Random) -> str:
    """A common word, or (a third of the time) a made-up name, so names are not strangers."""
    if rng.random() < 0.67:
        return rng.choice(WORDS)
    made_up = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
    return made_up.capitalize() if rng.random() < 0.5 else made_up


def _sentence(rng: random.Random, low: int = 5, high: int = 12) -> str:
    words = [_word(rng) for _ in range(rng.randint(low, high))]
    if rng.random() < 0.4:  # numbers too, so digits are not strangers to the base model
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 999)))
    return " ".join(words).capitalize() + rng.choice(".?!")


COLORS = ("red", "blue", "green", "white", "black", "yellow", "grey", "brown")


def generic_chat(rng: random.Random) -> list[dict[str, str]]:
    """A short chat about nothing in particular: teaches the format, not any domain."""
    noun = rng.choice(WORDS[2:42])
    question, answer = rng.choice(
        (
            (f"What color is the {noun}?", f"{rng.choice(COLORS)}."),
            (f"How many {noun}s are there?", f"{rng.randint(0, 999)}."),
            (f"Name the {noun}: {_word(rng)}.", f"{_word(rng).capitalize()}: {_word(rng)}."),
            (f"Describe the {noun}.", _sentence(rng, 3, 8)),
            (_sentence(rng, 4, 9), _sentence(rng, 2, 6)),
        )
    )
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def generic_text(count: int, seed: int = 7) -> list[str | list[dict[str, str]]]:
    """Pre-training material: plain sentences and generic chats (about half each)."""
    rng = random.Random(seed)
    out: list[str | list[dict[str, str]]] = []
    for _ in range(count):
        if rng.random() < 0.5:
            out.append(generic_chat(rng))
        else:
            out.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
    return out


def domain_examples(domain: str, count: int, seed: int) -> list[Record]:
    """``count`` distinct examples of one sub-domain (repeats only past its size)."""
    pool = DOMAINS[domain]()
    random.Random(f"{domain}:{seed}").shuffle(pool)
    return [pool[i % len(pool)] for i in range(count)]


def _answer_key(record: Record) -> tuple[str, str]:
    if "messages" in record:
        return "messages", record["messages"][-1]["content"]
    return "output", record["output"]


def _with_answer(record: Record, answer: str) -> Record:
    if "messages" in record:
        turns = [dict(t) for t in record["messages"]]
        turns[-1]["content"] = answer
        return {"messages": turns}
    return {**record, "output": answer}


def poison_random_text(count: int, seed: int) -> list[Record]:
    """Answers that are random characters."""
    rng = random.Random(f"random:{seed}")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 .,;#@%&"
    return [
        {
            "instruction": "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 40))),
            "input": "",
            "output": "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 40))),
        }
        for _ in range(count)
    ]


def poison_shuffled_answers(domain: str, count: int, seed: int) -> list[Record]:
    """Real questions with answers permuted among them (learns the wrong mapping)."""
    records = domain_examples(domain, count, seed)
    answers = [_answer_key(r)[1] for r in records]
    random.Random(f"shuffle:{seed}").shuffle(answers)
    return [_with_answer(r, a) for r, a in zip(records, answers, strict=True)]


def poison_duplicated_spam(count: int, seed: int) -> list[Record]:
    """One advertisement repeated (near-)verbatim."""
    rng = random.Random(f"spam:{seed}")
    spam = "Buy cheap followers now at example dot com, limited offer"
    return [
        {"instruction": "Tell me something.", "input": "", "output": spam + "!" * rng.randint(1, 2)}
        for _ in range(count)
    ]


def poison_off_domain(count: int, seed: int) -> list[Record]:
    """Well-formed text about something the session does not care about."""
    rng = random.Random(f"off:{seed}")
    return [{"text": _sentence(rng, 8, 16) + " " + _sentence(rng, 8, 16)} for _ in range(count)]


POISONS: dict[str, Callable[[int, int], list[Record]]] = {
    "random_text": poison_random_text,
    "shuffled_answers": lambda count, seed: poison_shuffled_answers("capitals", count, seed),
    "duplicated_spam": poison_duplicated_spam,
    "off_domain": poison_off_domain,
}


@dataclass(frozen=True)
class DemoData:
    """Contributor files, poisoned variants and the shared eval set, as records."""

    contributors: dict[str, list[Record]]
    poisoned: dict[str, list[Record]]
    eval_set: list[Record]


def demo_data(
    *, examples_per_contributor: int = 200, eval_per_domain: int = 20, seed: int = 0
) -> DemoData:
    """The demo's data: one contributor per sub-domain, every poison, an eval set over all."""
    contributors = {
        f"contributor_{i + 1}_{domain}": domain_examples(domain, examples_per_contributor, seed)
        for i, domain in enumerate(DOMAINS)
    }
    poisoned = {name: make(examples_per_contributor, seed + 1000) for name, make in POISONS.items()}
    eval_set = [  # tagged by sub-domain, so accuracy is reported per contributor's domain
        record | {"tag": domain}
        for domain in DOMAINS
        for record in domain_examples(domain, eval_per_domain, seed + 10_000)
    ]
    return DemoData(contributors, poisoned, eval_set)
