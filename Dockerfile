# One image for every metergate process: gateway, ingest, API (the command picks which).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY decoders decoders
COPY drivers drivers
COPY gateway gateway
COPY ingest ingest
COPY api api
COPY firmware_sim firmware_sim
COPY metergate metergate
COPY deploy deploy
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/metergate --create-home metergate

# Not root: the gateway reaches serial ports through the dialout group (compose adds it).
USER metergate
ENTRYPOINT ["metergate"]
CMD ["--help"]
