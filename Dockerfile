# fauxscan image for the CLI, migrations and workers. TORCH_SPEC picks the torch build:
# the default is the release pinned for CPU nodes; GPU images pass a CUDA build of the same release.
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install "${TORCH_SPEC}"
COPY pyproject.toml README.md alembic.ini ./
COPY scanner ./scanner
COPY worker ./worker
COPY training ./training
COPY migrations ./migrations
RUN pip install ".[monitoring]" && useradd --create-home fauxscan && mkdir /cache && chown fauxscan /cache
USER fauxscan
CMD ["scanner", "--help"]
