"""The checks of values a learner types: one function per kind of value, one wording.

Every boundary of the course (the training flags, a manifest builder, a sweep's
search space, an environment variable) checks what it is given with these, before
anything slow starts, and raises its own error type (``ConfigError``,
``ManifestError``, ``SweepError``, ``SettingsError``) so the caller can catch
what belongs to it. Inside, values are trusted.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_NAME = 63  # a Kubernetes name (a DNS label) has at most 63 characters
_DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")   # namespaces, Secret and StorageClass names
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")      # Service names, pod hostnames

LEARNING_RATE_HINT = "Adam works well from 1e-4 to 1e-2; the course default is 0.001."


def is_int(value: Any) -> bool:
    """A whole number, and not a bool (``True`` is an ``int`` in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(what: str, value: Any, low: int, high: int, meaning: str = "",
              error: type[Exception] = ValueError) -> int:
    """``value`` if it is an integer from ``low`` to ``high``; else ``error`` naming ``what``."""
    if not is_int(value) or not low <= value <= high:
        why = f" ({meaning})" if meaning else ""
        raise error(f"{what} must be an integer from {low} to {high}{why}, got {value!r}.")
    return value


def is_learning_rate(value: Any) -> bool:
    """A learning rate is a number in (0, 1]."""
    return is_number(value) and 0 < value <= 1


def check_learning_rate(what: str, value: Any, error: type[Exception] = ValueError) -> float:
    """``value`` if it is a learning rate, in (0, 1]; else ``error`` naming ``what``."""
    if not is_learning_rate(value):
        raise error(f"{what} must be a number in (0, 1], got {value!r}. {LEARNING_RATE_HINT}")
    return float(value)


def check_dns_label(what: str, value: Any, error: type[Exception] = ValueError) -> str:
    """``value`` if it is a DNS-1123 label: what Kubernetes accepts for a namespace's name."""
    if not isinstance(value, str) or len(value) > MAX_NAME or not _DNS_1123.fullmatch(value):
        raise error(f"{what} {value!r} is not a valid Kubernetes name: use at most {MAX_NAME} "
                    "lowercase letters, digits and '-', starting and ending with a letter or digit.")
    return value


def is_dns_1035_label(value: Any) -> bool:
    """A DNS-1035 label (starts with a letter): what a Service name or a pod hostname must be."""
    return isinstance(value, str) and bool(_DNS_1035.fullmatch(value))


def check_image(what: str, value: Any, example: str, error: type[Exception] = ValueError) -> str:
    """``value`` if it looks like a container image reference (not empty, no spaces)."""
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise error(f"{what} {value!r} is not a container image reference "
                    f"(e.g. {example!r} or 'registry.example.com/you/mnist-course:1').")
    return value


_MODEL_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
MODEL_NAME_HELP = "lowercase letters, digits and '-', starting with a letter (it becomes a folder and a URL)"


def check_model_name(what: str, value: Any, error: type[Exception] = ValueError) -> str:
    """``value`` if it can name a served model: it becomes a folder on the volume and a REST URL."""
    if not isinstance(value, str) or not _MODEL_NAME.fullmatch(value):
        raise error(f"{what} {value!r} is not valid: use {MODEL_NAME_HELP}.")
    return value
