# slot-inventory: one image for every role (api, worker, his-sim, migrate, loadtest).
# Build: docker build -t slot-inventory .   Run: see deploy/compose.yaml.
# HEALTH_PORT: the port the health check probes (the worker: its metrics port, 9101).

# -- builder: the project's wheel and every dependency as wheels --------------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install --no-cache-dir "build==1.2.2"
# Dependencies first (their layer is reused while only the code changes).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels/deps -r /tmp/requirements.txt
COPY inventory ./inventory
COPY lua ./lua
RUN python -m build --wheel --outdir /wheels/app .

# -- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 INVENTORY_HOST=0.0.0.0 INVENTORY_PORT=8080
RUN groupadd --system --gid 10001 inventory \
    && useradd --system --uid 10001 --gid inventory --home-dir /app --create-home inventory
WORKDIR /app
# Dependency layer, apart from the code.
COPY --from=builder /wheels/deps /wheels/deps
RUN pip install --no-cache-dir --no-index --find-links /wheels/deps /wheels/deps/*.whl \
    && rm -rf /wheels/deps
# The code.
COPY --from=builder /wheels/app /wheels/app
RUN pip install --no-cache-dir --no-deps /wheels/app/*.whl && rm -rf /wheels/app
USER 10001:10001
EXPOSE 8080 9101
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT', os.environ.get('INVENTORY_PORT', '8080')), timeout=2)"]
CMD ["inventory", "serve"]
