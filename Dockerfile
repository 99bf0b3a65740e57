# The same Python as CI, the same pinned requirements, Gunicorn as the command.
FROM python:3.11.7-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    APSARA_DATA_DIR=/app/data PORT=8000

WORKDIR /app
COPY requirements.txt .
RUN pip install --disable-pip-version-check -r requirements.txt

# The code belongs to root and is only read; the service's user owns the data folder alone,
# so a compromised worker cannot rewrite the application.
COPY . .
RUN useradd --create-home --uid 10001 apsara \
    && mkdir -p /app/data/history \
    && chown -R apsara:apsara /app/data
USER apsara

VOLUME ["/app/data"]
EXPOSE 8000
# Readiness: /health answers 503 without a Gemini key or a writable data folder.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8000\")}/health', timeout=4)"

CMD ["gunicorn", "wsgi:app"]
