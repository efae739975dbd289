"""Shell completion shared by the commands: profile names (``qrs --install-completion``).

Completion runs inside the user's shell on every TAB, so it must be quick and silent: it reads
the folder names under the project's ``deployments/`` (and the stacks ``qrs up`` remembers) and
never raises — a broken project completes to nothing rather than a traceback at the prompt.
"""

from __future__ import annotations

import contextlib


def complete_profile(incomplete: str) -> list[str]:
    """Profiles of the project found from the working directory, and stacks qrs started."""
    names: set[str] = set()
    # Anything may be wrong here (no project, unreadable folders): complete what is known.
    with contextlib.suppress(Exception):
        from qrs_cli.profiles.discovery import find_project, profile_names

        names |= set(profile_names(find_project()))
    with contextlib.suppress(Exception):
        from qrs_cli.runtime.state import known_profiles

        names |= set(known_profiles())
    return sorted(n for n in names if n.startswith(incomplete))
