"""Typed boundaries, one module per concern: what the state table stores (`records`), what the state machines'
tasks take and give back (`orchestrator_tasks`, `worker_tasks`) and what the API takes and answers (`api`).
The event contracts live in `spothub_core.contracts`. Models import no dal and no logic; stacks import models."""
