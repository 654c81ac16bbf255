# The dexnode node image: `dexnode run` (backfill, follower, API with the dashboard, CEX feeds, Kafka sink)
# in one process. No anvil and no Node.js in it: the devnet is for development, not for a node.
#
# NOT BUILT OR RUN IN DEXNODE'S CI OR DEVELOPMENT MACHINE: there is no container engine there, so this
# file is untested. It is kept minimal and conventional; compose.yaml runs it beside Postgres and Kafka.
#
#   docker build -t dexnode .
#   docker run --rm -p 8000:8000 -e DEXNODE_RPC_HTTP=https://... -e DEXNODE_RPC_WS=wss://... \
#     -e DEXNODE_DATABASE_URL=postgresql://user:password@host:5432/dexnode dexnode
#
# Settings: DEXNODE_* variables, flags after the image name (`... dexnode run --exchanges okx`), or a
# dexnode.toml mounted at /etc/dexnode/dexnode.toml (the working directory, where dexnode looks for it).

# The dashboard's chart library at the version package-lock.json pins: a build-time asset only.
FROM node:22-slim AS assets
WORKDIR /assets
COPY package-lock.json /tmp/package-lock.json
RUN npm install --no-audit --no-fund --ignore-scripts \
    "lightweight-charts@$(node -p "require('/tmp/package-lock.json').packages['node_modules/lightweight-charts'].version")"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEXNODE_API_HOST=0.0.0.0 \
    DEXNODE_DATA_DIR=/var/lib/dexnode
WORKDIR /app
COPY . .
COPY --from=assets /assets/node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.mjs \
    api/static/vendor/lightweight-charts.js
# editable, so the API serves the dashboard's files (api/static) from the source tree
RUN pip install -e ".[api,archive]" \
    && useradd --system --create-home --home-dir /var/lib/dexnode dexnode \
    && mkdir -p /etc/dexnode
USER dexnode
WORKDIR /etc/dexnode
EXPOSE 8000
VOLUME ["/var/lib/dexnode"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["dexnode"]
CMD ["run"]
