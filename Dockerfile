# The image manifests/base runs. Two stages: wheels are built with the build tools, and only
# the installed wheels reach the final stage. No HEALTHCHECK: Kubernetes probes /healthz and
# /readyz itself.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/runtime.lock requirements/runtime.lock
# The locked versions only, each checked against its hash (requirements/README.md).
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY webhook webhook
COPY plugins plugins
COPY certs certs
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin podmutate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile --no-index --no-deps /wheels/*.whl && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PODMUTATE_STATE_DIR=/var/run/podmutate
USER 10001:10001
EXPOSE 8443 8000
ENTRYPOINT ["podmutate"]
CMD ["serve"]
