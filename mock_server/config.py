"""One configuration object for the mock: every default is named here, once."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

# Light on purpose: granian's main process imports this module (cli.py), and every worker it forks starts with
# what that process holds; the app's modules (spec.py, world.py and their libraries) are imported by the workers.
SPEC_PATH = Path(__file__).resolve().with_name("openapi.yaml")
DEFAULT_SEED = 20241106  # the world's (world.py)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 2
DEFAULT_CLOCK_SPEED = 1.0
DEFAULT_UTC_OFFSET = "+08:00"  # OCP deployments answer in their server's zone; Asia/Shanghai is the common one
# Origins whose pages may call the mock from a browser (the usual dev-server ports); "*" reflects any origin.
DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000", "http://localhost:5173", "http://127.0.0.1:5173")

# Environment variable in which `ocp-mock serve` hands its configuration (JSON) to the workers (wsgi.py).
CONFIG_ENV = "OCP_MOCK_CONFIG"


def default_server_id() -> str:
    """A short, stable host id such as OCP puts in the envelope's `server` field."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:10]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Config:
    seed: int = DEFAULT_SEED
    task_count: int = 40
    spec_path: str = str(SPEC_PATH)
    # Where the world lives. None: a private temporary SQLite file for this app.
    db_path: str | None = None
    # A state file the user keeps across restarts: every change is synced to disk before it is acknowledged.
    durable: bool = False
    auth: bool = True
    users_file: str | None = None
    admin: bool = True
    # When set, every /__mock call must carry `X-Mock-Admin-Token: <token>` (required off loopback).
    admin_token: str | None = None
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    strict: bool = False
    # Answer the spec's operations (and the admin PUT /__mock/subtasks/{id}) in dispatch.py, below Flask (False:
    # every request goes through Flask; the answers are the same, only slower: tests compare the two).
    fast_path: bool = True
    utc_offset: str = DEFAULT_UTC_OFFSET
    server_id: str = field(default_factory=default_server_id)
    access_log: bool = False
    # The mock's clock: mock seconds per real second (1: real time; 0: stopped, moved only by the admin API).
    clock_speed: float = DEFAULT_CLOCK_SPEED
    cors_origins: list[str] = field(default_factory=lambda: list(DEFAULT_CORS_ORIGINS))  # [] turns CORS off
    # Scenario files (scenarios.py): every process loads them (to apply by name); create_app applies them, in order,
    # when apply_scenarios (`ocp-mock serve` applies them once, before its workers start).
    scenario_files: list[str] = field(default_factory=list)
    apply_scenarios: bool = True
    # A private folder where the processes of one server keep the worlds they built (world.share_built_worlds);
    # set by the entry points (`ocp-mock serve`: its temporary folder), not read by create_app.
    world_cache: str | None = None
    # Threads per worker process, as `ocp-mock serve --threads` started them (None: not known here). With 1, a
    # slow fault (latency, timeout) holds up every call on its worker: the fault board warns when one is set.
    threads: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls(**json.loads(text))
