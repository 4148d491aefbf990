# kling-bot in a container: `docker compose up -d` (compose.yaml), or
#   docker build -t kling-bot .
#   docker run -d --name kling-bot --env-file kling-bot.env \
#     -v kling-data:/data -v "$PWD/config.toml:/config/config.toml:ro" kling-bot
# The config is read from /config/config.toml (mounted read-only); the database, its job
# media and the videos waiting for delivery live on the /data volume. See README,
# "Operating the bot".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A user of its own: the bot never runs as root. Its home is the data volume.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin kling-bot \
    && mkdir -p /data /config \
    && chown kling-bot:kling-bot /data

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY adapters ./adapters
# PyAV's wheel brings its own FFmpeg (H.264 and AAC encoders): no system packages needed.
RUN pip install --no-compile . && rm -rf /src

# Relative paths of the defaults ([storage] path, videos_dir) land here, on the volume.
WORKDIR /data
VOLUME ["/data"]
USER kling-bot

# `kling-bot doctor --quick` checks the config, its folders, the database and the encoders,
# with no network call: the container's health is its own, not WaveSpeed's or a chat
# platform's (a blip there is not a reason to replace it). Run the full `kling-bot doctor`
# (keys, tokens, webhook URLs) by hand: docker compose exec bot kling-bot doctor --config ...
HEALTHCHECK --interval=1m --timeout=30s --start-period=1m --retries=3 \
    CMD ["kling-bot", "doctor", "--quick", "--config", "/config/config.toml"]

# A clean stop hands the running jobs over within [storage] lease_seconds (30 s by
# default): give it that long (docker stop -t 40, compose's stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["kling-bot"]
CMD ["run", "--config", "/config/config.toml"]
