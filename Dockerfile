# rwproxy container image.
#
#   docker build -t rwproxy .
#   docker run --rm -p 6033:6033 -v "$PWD/docker/rwproxy.toml:/etc/rwproxy/rwproxy.toml:ro" \
#       -e RWPROXY_APP_PASSWORD=app_pw rwproxy
#
# The configuration is not baked in: mount it at /etc/rwproxy/rwproxy.toml (docker-compose.yml does).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs (see .dockerignore); sources are removed once installed.
WORKDIR /src
COPY pyproject.toml ./
COPY proxy ./proxy
COPY rules ./rules
COPY admin ./admin
RUN pip install . \
    && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin rwproxy
USER rwproxy
WORKDIR /

# 6033: MySQL data port; 6032: admin port (MySQL protocol).
EXPOSE 6033 6032
ENTRYPOINT ["rwproxy"]
CMD ["--config", "/etc/rwproxy/rwproxy.toml"]
