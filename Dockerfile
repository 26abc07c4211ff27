# License server: one process, embedded SQLite, keys generated on first run.
#   docker build -t license-server .
#   docker run -p 8080:8080 -v licsrv-data:/data license-server
# Keys and the database live on the /data volume; back it up (python run.py backup ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LICENSE_SERVER_HOST=0.0.0.0 \
    LICENSE_SERVER_PORT=8080 \
    LICENSE_SERVER_DATABASE=/data/license_server.db \
    LICENSE_SERVER_KEYS_DIR=/data/keys

WORKDIR /app
COPY pyproject.toml README.md ./
COPY license_server ./license_server
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin licsrv \
    && mkdir -p /data \
    && chown licsrv:licsrv /data
COPY run.py settings.toml ./
COPY templates ./templates

USER licsrv
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('LICENSE_SERVER_PORT', '8080'), timeout=4)"]
CMD ["python", "run.py", "serve"]
