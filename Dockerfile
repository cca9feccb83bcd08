# The Lambda Action Module: REST on 8080 and gRPC on 50060, both served by `python app.py` (WORKERS processes).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY config.py app.py serving.py clients_cli.py logging_setup.py ./
COPY models/ models/
COPY services/ services/
COPY routes/ routes/
COPY grpc_api/ grpc_api/
COPY proto/ proto/
COPY local_lambda/ local_lambda/
COPY functions/ functions/

RUN useradd --system --uid 10001 --home-dir /app lambda-action \
    && mkdir -p /app/data /app/logs \
    && chown -R lambda-action /app/data /app/logs
# By uid, so that Kubernetes' runAsNonRoot can tell without looking the name up.
USER 10001

ENV ENVIRONMENT=production \
    HOST=0.0.0.0 \
    REST_PORT=8080 \
    GRPC_PORT=50060 \
    WORKERS=1 \
    LOG_DIR=/app/logs

EXPOSE 8080 50060

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('REST_PORT', '8080'), timeout=4).status == 200 else 1)"]

CMD ["python", "app.py"]
