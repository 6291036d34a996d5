"""The chaos suite reuses the integration fixtures (real Redis, simulator, API, worker processes)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures are registered by import
    api,
    api_server,
    simulator,
    stack_env,
    stack_settings,
    start_worker,
)
