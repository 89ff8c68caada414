"""The OCP response checks as schemathesis checks. Importing this module registers them: schemathesis keeps
checks in one global registry, so import it only where you want them (a conftest, or `hooks =` in
schemathesis.toml). `ocp-contract` itself does not import it; it runs the same functions on every response.

    import contracts.st_checks  # noqa: F401  registers ocp_envelope_status, ocp_enum_values, ...
"""

from __future__ import annotations

import schemathesis

from . import checks
from .spec import Contract

_contracts: dict[int, Contract] = {}


def contract_for(case) -> Contract:
    raw = case.operation.schema.raw_schema
    if id(raw) not in _contracts:
        _contracts[id(raw)] = Contract.from_dict(raw)
    return _contracts[id(raw)]


def _as_schemathesis_check(check: checks.Check):
    def st_check(ctx, response, case):
        contract = contract_for(case)
        return check(checks.Exchange.from_schemathesis(case, response, contract), contract)

    st_check.__name__ = st_check.__qualname__ = check.__name__
    st_check.__doc__ = check.__doc__
    return schemathesis.check(st_check)


REGISTERED = tuple(_as_schemathesis_check(check) for check in checks.RESPONSE_CHECKS)
