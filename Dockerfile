# One image for every callq process (api, worker, beat, flower, simulator); compose.yaml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The runtime dependencies, at the versions of requirements-runtime.lock (`make lock`), in a layer of their own:
# a code change rebuilds only the layers below.
COPY requirements-runtime.lock ./
RUN pip install -r requirements-runtime.lock
# .dockerignore keeps the venv, tests, local data and caches out of the build context.
COPY . .
# callq itself; its dependencies are all in the lock, so nothing is resolved here.
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 --user-group callq

# Processes run unprivileged; they need no writable path in /app (Redis holds all state).
USER callq
EXPOSE 8000 8089 5555
CMD ["uvicorn", "--factory", "api.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
