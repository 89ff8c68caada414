"""ocp-task-mock: a mock of the OceanBase Cloud Platform (OCP) task API, driven by openapi.yaml."""

from .config import Config

__all__ = ["create_app", "Config"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # create_app on first use: importing the package (as `ocp-mock serve`'s main process does, for cli.py) does not
    # import the app and its libraries (Flask, jsonschema, yaml).
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
