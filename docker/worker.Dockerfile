# The GPU worker image: CUDA runtime, torch with CUDA, one Celery worker on the `gpu` queue.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 \
    SNNCONV_DATA_DIR=/data \
    SNNCONV_DATASETS_DIR=/datasets \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
# PyPI's Linux torch wheel ships its own CUDA libraries; the base image brings the runtime.
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY core ./core
COPY api ./api
COPY worker ./worker
RUN pip install . \
    && useradd --uid 10001 --create-home snnconv \
    && mkdir -p /data/uploads /data/results /datasets \
    && chown -R snnconv /data
USER snnconv

# One job per GPU at a time; scale with `docker compose up --scale worker=N` (one GPU each).
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "gpu", "--concurrency", "1", "--loglevel", "INFO"]
