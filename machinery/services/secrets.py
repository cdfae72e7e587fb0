"""Resolving secret references where the calls are made, from the environment or from files.

A service's header may be ``{"secret": "NAME"}``: the definitions, the API and
``machinery export`` then hold only the name, and the worker reads the value
when it calls, from ``MACHINERY_SECRET_NAME``, else from the file ``NAME`` in
``MACHINERY_SECRETS_DIR`` (where Docker and Kubernetes mount their secrets).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from machinery.engine.errors import InvalidConfig
from machinery.engine.model import HeaderValue, SecretRef

ENV_PREFIX = "MACHINERY_SECRET_"


class Secrets:
    """The values of secret references, read at each call so that a rotated secret is used from the next one."""

    def __init__(self, directory: Path | None = None, env: Mapping[str, str] = os.environ) -> None:
        self.directory = directory
        self.env = env

    def resolve(self, headers: Mapping[str, HeaderValue]) -> dict[str, str]:
        """The headers to send, each secret reference replaced by its value; InvalidConfig naming a missing one."""
        return {name: self.value(v) if isinstance(v, SecretRef) else v for name, v in headers.items()}

    def value(self, secret: SecretRef) -> str:
        """``MACHINERY_SECRET_<NAME>`` if set and not empty, else the file ``NAME`` less one trailing newline."""
        if value := self.env.get(ENV_PREFIX + secret.name):
            return value
        if self.directory is not None:
            # The name cannot leave the directory: SecretRef holds only letters, digits and '_'.
            path = self.directory / secret.name
            try:
                return path.read_text().removesuffix("\n")
            except FileNotFoundError:
                pass
            except OSError as e:
                raise InvalidConfig(f"the secret {secret.name} cannot be read from {path}: {e.strerror}") from e
        raise InvalidConfig(
            f"the secret {secret.name} is not set: set {ENV_PREFIX}{secret.name}, "
            f"or write it to the file {secret.name} in MACHINERY_SECRETS_DIR"
        )
