# One image for the chat runtime (`rillet serve`, what every ChatService pod runs) and the
# operator (`rillet operator`, what the Helm chart runs): both come from one distribution,
# so the operator always renders settings for the runtime version it ships with.
#   make image                        (docker, podman or buildah; tags it with the version)
# PYTHON_IMAGE is the base of the image, BUILD_IMAGE of the stage that installs into it;
# both need a Python 3.11 at the same path, and BUILD_IMAGE its venv module. CI builds
# them from Debian's packages (release/image.sh) where no registry of images is reached.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG BUILD_IMAGE=${PYTHON_IMAGE}

FROM ${BUILD_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY runtime runtime
COPY operator operator
COPY docs docs
# A venv that is copied whole: the wheel (hatchling builds it in an isolated environment),
# then the app and its dependencies, pinned by constraints.txt, with the Chroma client; and
# the built-in index (Rillet's docs, offline embeddings) that a ChatService without
# vectorIndex.embedded.claimName serves from /opt/rillet/index. pip's cache is a build
# cache, never a layer; pip and setuptools (ensurepip's) leave the venv last. Then the
# venv's SBOM (CycloneDX), made by a tool that stays in this stage: the SBOM ships in the
# image, and `make image` copies it out beside it.
ARG CYCLONEDX_BOM="cyclonedx-bom>=7.2,<8"
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/rillet \
 && /opt/rillet/bin/pip wheel --quiet --no-deps --wheel-dir /wheels . \
 && /opt/rillet/bin/pip install --quiet --constraint constraints.txt "$(ls /wheels/*.whl)[chroma]" \
 && /opt/rillet/bin/rillet ingest docs --index /opt/rillet/index \
 && /opt/rillet/bin/pip uninstall --quiet --yes pip setuptools \
 && python3 -m venv /sbom-tool \
 && /sbom-tool/bin/pip install --quiet "$CYCLONEDX_BOM" \
 && /sbom-tool/bin/cyclonedx-py environment --pyproject pyproject.toml --output-reproducible \
      --output-file /opt/rillet/sbom.cdx.json /opt/rillet

FROM ${PYTHON_IMAGE}
ARG VERSION=0.0.0+unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rillet" \
      org.opencontainers.image.description="Streaming LangGraph chat services on Kubernetes: the runtime and the operator" \
      org.opencontainers.image.source="https://github.com/rillet-dev/rillet" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The official Python images carry pip, setuptools and wheel; the app needs none of them.
RUN if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall --quiet --yes pip setuptools wheel; \
    fi \
 && groupadd --gid 10001 rillet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rillet
COPY --from=build /opt/rillet /opt/rillet
ENV PATH=/opt/rillet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RILLET_REVISION=${REVISION}
# Runs with a read-only root filesystem: the only writable path is /tmp (an emptyDir).
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
CMD ["rillet", "serve"]
