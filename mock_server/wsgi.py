"""Entry point for WSGI servers' worker processes: the configuration arrives in OCP_MOCK_CONFIG (JSON)."""

from __future__ import annotations

import gc
import logging
import os
import sys

from .accesslog import AccessFormatter, BatchingHandler, access_log, lean_records
from .app import create_app
from .config import CONFIG_ENV, Config
from .world import share_built_worlds


def app_from_env():
    config = Config.from_json(os.environ[CONFIG_ENV]) if CONFIG_ENV in os.environ else Config()
    if config.access_log:
        lean_records()
        handler = BatchingHandler(sys.stderr)
        handler.setFormatter(AccessFormatter())
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    share_built_worlds(config.world_cache)
    app = create_app(config)
    # What start-up made (spec, validators, Flask, the seeded world) lives as long as the worker: out of the
    # collector's sight, a full collection takes well under a millisecond instead of 20-50 ms (a latency spike).
    gc.collect()  # start-up's garbage first, so that freezing keeps only what lives
    gc.freeze()
    return app
