"""Commands registered by this module are added by their owners."""

from . import app  # noqa: F401
