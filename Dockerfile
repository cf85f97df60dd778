# One image for every billing service: `billing serve <name>`, `billing migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app billing

USER billing
EXPOSE 8080
ENTRYPOINT ["billing"]
CMD ["--help"]
