"""The answers that make a profile, and how flags, ``--from`` and defaults combine into them.

Precedence (copier's): flags > prompts > ``--from`` profile > schema defaults. Each question sets
one key; a key a question answered is written explicitly into ``.env``, every other sampler key
stays a commented-out default. Answers are validated against the same schemas the plugin uses
before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import SecretStr

from qr_sampler.errors import SettingProblem, SettingsError
from qr_sampler.settings import (
    ENV_PREFIX,
    Settings,
    setting_specs,
    settings_from_mapping,
    unknown_key_problems,
)
from qrs_cli.profiles.sources import ProfileSources
from qrs_cli.profiles.stack import ENTROPY_SERVER_ADDRESS, stack_from_mapping, stack_keys

SOURCE_KEY = "QR_ENTROPY_SOURCE_TYPE"
API_KEY_KEY = "QR_GRPC_API_KEY"
HEADER_KEY = "QR_GRPC_API_KEY_HEADER"
GRPC_SOURCE = "quantum_grpc"

#: When a question applies: always; ``local-choice`` when no co-located server fixes the source;
#: ``grpc`` for gRPC sources; ``remote-grpc`` for gRPC without the co-located server (its
#: address is fixed); ``entropy-server`` only with the co-located server.
Applies = Literal["always", "local-choice", "grpc", "remote-grpc", "entropy-server"]


@dataclass(frozen=True)
class Question:
    """One question of ``qrs profile new``: the flag that answers it and the key it sets."""

    name: str
    key: str
    prompt: str
    applies: Applies = "always"


QUESTIONS: tuple[Question, ...] = (
    Question(
        "source",
        SOURCE_KEY,
        "Entropy source (system, quantum_grpc, mock_uniform, …)",
        "local-choice",
    ),
    Question("address", "QR_GRPC_SERVER_ADDRESS", "Entropy server (host:port)", "remote-grpc"),
    Question(
        "mode", "QR_GRPC_MODE", "Transport: unary, server_streaming or bidi_streaming", "grpc"
    ),
    Question("method_path", "QR_GRPC_METHOD_PATH", "Unary method path", "grpc"),
    Question("stream_method_path", "QR_GRPC_STREAM_METHOD_PATH", "Streaming method path", "grpc"),
    Question("api_key_header", HEADER_KEY, "API key metadata header", "grpc"),
    Question(
        "max_bytes_per_request",
        "QR_GRPC_MAX_BYTES_PER_REQUEST",
        "Most bytes per call (0 = no cap)",
        "grpc",
    ),
    Question(
        "rate_limit_per_min", "QR_GRPC_RATE_LIMIT_PER_MIN", "Most calls a minute (0 = none)", "grpc"
    ),
    Question(
        "daily_byte_budget", "QR_GRPC_DAILY_BYTE_BUDGET", "Most bytes a day (0 = none)", "grpc"
    ),
    Question("sample_count", "QR_SAMPLE_COUNT", "Entropy bytes per token"),
    Question("model", "HF_MODEL", "Hugging Face model"),
    Question("port", "VLLM_PORT", "Host port of the vLLM API"),
    Question(
        "entropy_server_port",
        "QRS_ENTROPY_SERVER_PORT",
        "Host port of the entropy server",
        "entropy-server",
    ),
)
QUESTION_BY_NAME = {q.name: q for q in QUESTIONS}


@dataclass(frozen=True)
class ProfileAnswers:
    """What a new profile will contain.

    ``sampler`` holds the ``QR_*`` keys written explicitly (never the API key), ``stack`` the
    stack keys that differ from the template's, ``extra`` other variables carried over from
    ``--from`` or ``--set`` (passed to the vLLM container as they are). ``api_key`` goes only
    to the secrets file.
    """

    name: str
    sampler: dict[str, str] = field(default_factory=dict)
    stack: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    entropy_server: bool = False
    api_key: SecretStr | None = None

    @property
    def source(self) -> str:
        return self.sampler.get(SOURCE_KEY, "system")

    def applies(self, question: Question) -> bool:
        """Whether ``question`` means anything for these answers (e.g. no address for system)."""
        grpc = self.source == GRPC_SOURCE
        return {
            "always": True,
            "local-choice": not self.entropy_server,
            "grpc": grpc,
            "remote-grpc": grpc and not self.entropy_server,
            "entropy-server": self.entropy_server,
        }[question.applies]

    def value(self, question: Question) -> str:
        """The current answer to ``question``: explicit value, else the schema default."""
        store = self.sampler if question.key.startswith(ENV_PREFIX) else self.stack
        if question.key in store:
            return store[question.key]
        return default_value(question.key)

    def answer(self, question: Question, value: str) -> ProfileAnswers:
        """A copy with ``question`` answered."""
        return self.set_key(question.key, value)

    def set_key(self, key: str, value: str) -> ProfileAnswers:
        """A copy with any key set: sampler, stack, or an extra variable."""
        if key.upper().startswith(ENV_PREFIX):
            return replace(self, sampler={**self.sampler, key.upper(): value})
        if key in stack_keys():
            return replace(self, stack={**self.stack, key: value})
        return replace(self, extra={**self.extra, key: value})

    def without(self, key: str) -> ProfileAnswers:
        """A copy where ``key`` is no longer written explicitly."""
        return replace(
            self,
            sampler={k: v for k, v in self.sampler.items() if k != key},
            stack={k: v for k, v in self.stack.items() if k != key},
            extra={k: v for k, v in self.extra.items() if k != key},
        )

    def with_entropy_server(self, enabled: bool) -> ProfileAnswers:
        """A copy with (or without) the co-located reference server and its gRPC defaults.

        Turning the server off also drops the source and address that pointed at it (they were
        its consequence, and would name a server that no longer starts); an address the user
        chose for another server is kept.
        """
        answers = replace(self, entropy_server=enabled)
        if enabled:
            answers = answers.set_key(SOURCE_KEY, GRPC_SOURCE)
            answers = answers.set_key("QR_GRPC_SERVER_ADDRESS", ENTROPY_SERVER_ADDRESS)
        elif self.sampler.get("QR_GRPC_SERVER_ADDRESS") == ENTROPY_SERVER_ADDRESS:
            answers = answers.without("QR_GRPC_SERVER_ADDRESS").without(SOURCE_KEY)
        return answers

    def completed(self) -> ProfileAnswers:
        """Write the source and, for gRPC, every gRPC question explicitly: a profile's .env
        then says what it talks to without reading the defaults.

        The API key header is left out unless answered: a header without a key is a warning.
        """
        answers = self.set_key(SOURCE_KEY, self.source)
        if self.source != GRPC_SOURCE:
            return answers
        for q in QUESTIONS:
            if q.applies in {"grpc", "remote-grpc"} and q.key not in answers.sampler:
                if q.key == HEADER_KEY and self.api_key is None:
                    continue
                answers = answers.set_key(q.key, default_value(q.key))
        return answers


def default_value(key: str) -> str:
    """The schema default of a sampler or stack key, as ``.env`` text."""
    for spec in setting_specs():
        if spec.env_key == key:
            return spec.default
    from qrs_cli.profiles.stack import stack_specs

    for st in stack_specs():
        if st.env_key == key:
            return st.default
    return ""


def answers_from_profile(sources: ProfileSources, name: str) -> ProfileAnswers:
    """Start a new profile from an existing one (``--from``): its explicit keys, no secrets."""
    from qrs_cli.profiles.secrets_check import is_secret_key

    answers = ProfileAnswers(name=name, entropy_server=sources.co_located_server)
    for key, value in sources.env.values().items():
        if key == "QRS_PROFILE" or is_secret_key(key):
            continue
        answers = answers.set_key(key, value)
    return answers


def parse_assignments(pairs: list[str]) -> list[tuple[str, str]]:
    """``--set KEY=VALUE`` options → pairs; a malformed one is a SettingsError."""
    result = []
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not key.strip().replace("_", "a").isalnum():
            problems.append(SettingProblem("--set", "", f"{pair!r} is not KEY=VALUE"))
            continue
        result.append((key.strip(), value))
    if problems:
        raise SettingsError(problems, hint="write --set QR_TOP_K=40 (one key per --set)")
    return result


def check_answers(answers: ProfileAnswers) -> Settings:
    """Validate the answers with the sampler and stack schemas; SettingsError on any problem."""
    problems = unknown_key_problems(answers.sampler, where="the answers")
    if API_KEY_KEY in answers.sampler:
        problems.append(
            SettingProblem(
                API_KEY_KEY, "", "the API key is never written to .env; use --api-key-env VAR"
            )
        )
    if problems:
        raise SettingsError(problems, hint="`qrs settings` lists every key")
    values: dict[str, str] = dict(answers.sampler)
    if answers.api_key is not None:
        values[API_KEY_KEY] = answers.api_key.get_secret_value()
    settings = settings_from_mapping(values)
    stack_from_mapping({**answers.stack, "QRS_PROFILE": answers.name})
    return settings
