"""ocp-task-mock: a mock of the OceanBase Cloud Platform (OCP) task API, driven by openapi.yaml."""

from .app import create_app
from .config import Config

__all__ = ["create_app", "Config"]
__version__ = "0.1.0"
