# One image for the chat runtime (`rillet serve`, what every ChatService pod runs) and the
# operator (`rillet operator`, what the Helm chart runs): both come from one distribution,
# so the operator always renders settings for the runtime version it ships with.
#   docker build -t ghcr.io/rillet-dev/rillet:0.1.0 .
# tests/e2e/test_image.py installs the wheel the same way and runs these commands.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY runtime runtime
COPY operator operator
COPY docs docs
# The wheel (hatchling builds it in an isolated environment), then the app and its
# dependencies, pinned by constraints.txt, into a venv that is copied whole, with the
# Chroma client; and the built-in index (Rillet's docs, offline embeddings) that a
# ChatService without vectorIndex.embedded.claimName serves from /opt/rillet/index.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/rillet \
 && /opt/rillet/bin/pip install --constraint constraints.txt "$(ls /wheels/*.whl)[chroma]" \
 && /opt/rillet/bin/rillet ingest docs --index /opt/rillet/index \
 && /opt/rillet/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 rillet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rillet
COPY --from=build /opt/rillet /opt/rillet
ENV PATH=/opt/rillet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Runs with a read-only root filesystem: the only writable path is /tmp (an emptyDir).
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
CMD ["rillet", "serve"]
