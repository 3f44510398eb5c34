# The API image: slim Python with the CPU build of torch (pre-flight parses uploads here).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 \
    SNNCONV_DATA_DIR=/data \
    SNNCONV_DATASETS_DIR=/datasets

WORKDIR /app
# torch first, from the CPU index, so the image does not carry CUDA libraries it cannot use.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY core ./core
COPY api ./api
COPY worker ./worker
RUN pip install . \
    && useradd --uid 10001 --create-home snnconv \
    && mkdir -p /data/uploads /data/results /datasets \
    && chown -R snnconv /data
# The example models the demo page offers (the demo CNN trained on the MNIST digits that ship
# in the image, and its CQ fine-tune), built once into the image: about a minute.
RUN python -m api.cli examples && chown -R snnconv /data/examples
USER snnconv

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --retries=10 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["python", "-m", "api.cli", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
