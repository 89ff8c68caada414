"""Optional parts of the mock, each wired into the app in one place: init_extensions(app, mock)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from .app import Mock


def init_extensions(app: "Flask", mock: "Mock") -> None:
    """Called by create_app after the spec's operations are routed and before the admin API."""
