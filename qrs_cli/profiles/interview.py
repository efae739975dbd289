"""The questions ``qrs profile new`` asks on a terminal, through an injected :class:`Asker`.

The library decides what to ask and checks each answer against the schema (asking again, at most
three times, with the schema's own message); the command supplies the terminal I/O. Questions a
flag already answered are not asked; questions that do not apply (an address for ``system``)
are skipped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from pydantic import SecretStr

from qr_sampler.errors import SettingsError
from qr_sampler.settings import ENV_PREFIX, settings_from_mapping
from qrs_cli.profiles.answers import HEADER_KEY, QUESTIONS, ProfileAnswers, Question
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.stack import stack_from_mapping

_TRIES = 3
ENTROPY_SERVER_QUESTION = "entropy_server"
API_KEY_QUESTION = "api_key"


class Asker(Protocol):
    """Terminal I/O for the interview (typer prompts in the CLI, scripted answers in tests)."""

    def text(self, prompt: str, default: str) -> str: ...

    def confirm(self, prompt: str, default: bool) -> bool: ...

    def secret(self, prompt: str) -> str: ...

    def say(self, message: str) -> None: ...


def interview(answers: ProfileAnswers, asker: Asker, answered: frozenset[str]) -> ProfileAnswers:
    """Ask every applicable question not in ``answered``; return the updated answers."""
    if ENTROPY_SERVER_QUESTION not in answered:
        co_located = asker.confirm(
            "Run the reference entropy server next to vLLM (no hardware needed)?",
            answers.entropy_server,
        )
        answers = answers.with_entropy_server(co_located)
    for question in QUESTIONS:
        if question.name in answered or not answers.applies(question):
            continue
        if question.key == HEADER_KEY:
            answers = _api_key(answers, asker, question, answered)
            continue
        answers = answers.answer(question, _ask_valid(asker, question, answers.value(question)))
    return answers


def _api_key(
    answers: ProfileAnswers, asker: Asker, question: Question, answered: frozenset[str]
) -> ProfileAnswers:
    """Whether the server wants a key, its header, and the key itself (hidden input)."""
    wanted = asker.confirm(
        "Does the entropy server need an API key?", HEADER_KEY in answers.sampler
    )
    if not wanted:
        return answers.without(HEADER_KEY)
    answers = answers.answer(question, _ask_valid(asker, question, answers.value(question)))
    if API_KEY_QUESTION in answered or answers.api_key is not None:
        return answers
    key = asker.secret("API key (hidden; Enter to skip: `qrs profile set-key` adds it later)")
    return replace(answers, api_key=SecretStr(key)) if key else answers


def _ask_valid(asker: Asker, question: Question, default: str) -> str:
    for _ in range(_TRIES):
        value = asker.text(question.prompt, default).strip()
        problem = answer_problem(question.key, value)
        if not problem:
            return value
        asker.say(f"  {problem}")
    raise ProfileError(
        f"no valid answer for {question.key} after {_TRIES} tries",
        "run `qrs settings` to see what the key accepts, or pass it as a flag",
    )


def answer_problem(key: str, value: str) -> str:
    """The schema's complaint about one answer on its own, or ''."""
    try:
        if key.startswith(ENV_PREFIX):
            settings_from_mapping({key: value})
        else:
            stack_from_mapping({key: value})
    except SettingsError as exc:
        own = [p for p in exc.problems if p.key == key]
        return "; ".join(str(p) for p in own)
    return ""
