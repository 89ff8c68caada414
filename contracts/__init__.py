"""ocp-contract: checks any server against the OCP task API contract."""
