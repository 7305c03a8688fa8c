# syntax=docker/dockerfile:1
# The scoring service: onnxruntime on CPU with the serving dependencies only (no torch), the shipped
# model inside, running as a non-root user.
#   docker build -t flexguard .
#   docker run -p 8000:8000 -v flexguard-data:/data -e FLEXGUARD_API_KEYS=change-me flexguard
# Under a CPU limit (--cpus N), also pass -e FLEXGUARD_THREADS=N -e FLEXGUARD_DECODE_THREADS=N: the
# container sees all of the host's cores otherwise.

# Build stage: the source tree becomes one wheel, so no sources or build tools reach the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli ./cli
COPY models ./models
COPY inference ./inference
COPY scan ./scan
COPY service ./service
# pyproject.toml's package list names these too; their torch imports only run in `flexguard train`.
COPY training ./training
COPY datasets ./datasets
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLEXGUARD_HOST=0.0.0.0 \
    FLEXGUARD_PORT=8000
# The wheel's own dependencies and the PostgreSQL driver for the review database (no torch); the shipped model is package data in
# it. Mounted rather than copied, so the wheel leaves no layer behind. The last command refuses to
# build an image whose model is missing or lacks its metadata.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install "$(ls /wheels/*.whl)[postgres]" \
    && python -c "from flexguard.models import shipped_model_path; from flexguard.inference.engine import Engine; Engine(shipped_model_path())"

RUN useradd --create-home --uid 10001 flexguard && mkdir /data && chown flexguard /data
USER flexguard
WORKDIR /home/flexguard
# The supervisor-review database (SQLite by default) lives on a volume, so it outlives the container;
# set FLEXGUARD_DATABASE_URL=postgresql://... to use PostgreSQL instead.
ENV FLEXGUARD_DATABASE_URL=sqlite:////data/flexguard.db
VOLUME /data
EXPOSE 8000
# Ready means the model is loaded and has run once; urlopen fails on the 503 sent before that.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['FLEXGUARD_PORT']}/readyz\", timeout=4)"]
CMD ["flexguard", "serve"]
