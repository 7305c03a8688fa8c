# The scoring service: onnxruntime on CPU, no torch.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLEXGUARD_HOST=0.0.0.0 \
    FLEXGUARD_PORT=8000

RUN useradd --create-home --uid 10001 flexguard
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cli ./cli
COPY models ./models
COPY service ./service
COPY training ./training
COPY datasets ./datasets
RUN pip install . && rm -rf /app/*

USER flexguard
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"FLEXGUARD_PORT\"]}/healthz')"
CMD ["flexguard", "serve"]
