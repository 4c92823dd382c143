# Flipscope: the dashboard and its background worker in one container.
#   docker build -t flipscope .
#   docker run -d -p 127.0.0.1:8501:8501 -v flipscope-data:/data flipscope
# Inside the container the dashboard listens on every interface (0.0.0.0: Docker's port
# forwarding arrives there); `-p 127.0.0.1:8501:8501` publishes it on the host's loopback only,
# for a TLS reverse proxy on the host to serve. Never `-p 8501:8501`: that opens the plain-HTTP
# port on every interface of the host (and Docker's rules bypass most host firewalls).
# Sign-in: mount a secrets file with an [auth] section and list who may enter, e.g.
#   -v $PWD/secrets.toml:/app/.streamlit/secrets.toml:ro -e FLIPSCOPE_ALLOWED_EMAILS=ada@example.org
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian's chromium drives kaleido 1.x for PNG export.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# The CPU build of torch first, from PyTorch's CPU index: resolving `torch` from PyPI would pull
# the multi-GB CUDA build. The constraint keeps `pip install .` from replacing it.
RUN echo "torch==2.13.0" > /tmp/constraints.txt \
    && pip install --index-url https://download.pytorch.org/whl/cpu -c /tmp/constraints.txt torch

COPY . /app
RUN pip install -c /tmp/constraints.txt . \
    && useradd --create-home --uid 10001 flipscope \
    && mkdir -p /data \
    && chown flipscope:flipscope /data

# The code runs from /app (PYTHONPATH before site-packages), so `flipscope run` starts Streamlit in
# /app: .streamlit/config.toml (XSRF on, error details hidden, upload limit) and assets/ apply, and
# app/server.py adds the frame headers and closes /_stcore/metrics.
ENV PYTHONPATH=/app \
    FLIPSCOPE_DATA_DIR=/data \
    FLIPSCOPE_PORT=8501 \
    FLIPSCOPE_CHROMIUM=/usr/bin/chromium
USER flipscope
VOLUME ["/data"]
# Documentation only: publish it with -p 127.0.0.1:8501:8501 (see the top of this file).
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_stcore/health' % os.environ.get('FLIPSCOPE_PORT', '8501'), timeout=4)"]

# 0.0.0.0 inside the container only; the host decides what is reachable (-p 127.0.0.1:...).
CMD ["flipscope", "run", "--address", "0.0.0.0"]
