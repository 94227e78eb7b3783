# LoRIF attribution service.
#   CPU (default):  docker build -t lorif .
#   CUDA:           docker build --build-arg VARIANT=cuda -t lorif:cuda .
#   Ray Serve:      docker build --build-arg EXTRAS=cluster -t lorif:cluster .  (--cluster)
# The install is scripts/setup.sh, the same script the README and CI run (runtime extras only,
# not editable), so the image cannot drift from what CI tests.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# cpu: torch's CPU wheel from PyTorch's index; cuda: PyPI's Linux wheel (bundles the CUDA
# runtime; the host needs only the NVIDIA driver and container toolkit).
ARG VARIANT=cpu
ARG TORCH_SPEC=torch==2.13.0
# optional extras of pyproject.toml: "" = the runtime only; cluster = with ray[serve]
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/setup.sh scripts/setup.sh
COPY indexer/ indexer/
COPY service/ service/
COPY lorif_cli/ lorif_cli/
COPY lorif_demo/ lorif_demo/
RUN if [ "$VARIANT" = "cuda" ]; then torch_index=""; \
    else torch_index="https://download.pytorch.org/whl/cpu"; fi \
    && LORIF_VENV=/opt/venv LORIF_EXTRAS="$EXTRAS" LORIF_EDITABLE=0 LORIF_NO_CHROMIUM=1 \
       LORIF_TORCH="$TORCH_SPEC" LORIF_TORCH_INDEX="$torch_index" bash scripts/setup.sh \
    && find /opt/venv -name "__pycache__" -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin lorif \
    && mkdir -p /data /index && chown 10001:10001 /data /index
COPY --from=build /opt/venv /opt/venv
# KubeRay starts Ray from a login shell, whose PATH (/etc/profile) lacks /opt/venv/bin.
RUN for t in ray serve; do if [ -x "/opt/venv/bin/$t" ]; then ln -s "/opt/venv/bin/$t" /usr/local/bin/; fi; done
# The demo model, for the compose/k8s indexer that builds the Shakespeare demo index.
COPY models/ /app/models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HDF5_USE_FILE_LOCKING=FALSE \
    LORIF_MODELS=/app/models \
    LORIF_CACHE=/data/cache \
    LORIF_HOST=0.0.0.0 \
    LORIF_PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# No curl in the image: the standard library does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status != 200)"]
ENTRYPOINT ["lorif"]
# The index is mounted read-only at /index (see docker-compose.yml).
CMD ["serve", "/index/shakespeare"]
