# syntax=docker/dockerfile:1.7
# The controller's image: `cutover run`, as terraform/modules/controller's task definition starts it.
#
#   docker build -t cutover:1.0.0 .
#
# The first stage builds a virtual environment holding cutover and its dependencies; the final
# stage carries only that environment on the same Python, without pip, caches or sources, and runs
# as an unprivileged user. At run time nothing is written outside /tmp (relative defaults such as
# ./cutover.db resolve there), so the read-only root filesystem and the /tmp volume the task
# definition gives the container are all it needs.

FROM python:3.12.12-slim-bookworm AS build
ENV VENV=/opt/cutover PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller/ controller/
COPY flags/ flags/
COPY legacy_adapter/ legacy_adapter/
COPY new_adapter/ new_adapter/
COPY cutover_job/ cutover_job/
RUN python -m venv "$VENV"
# A cache mount keeps downloaded wheels between builds without putting them in a layer.
RUN --mount=type=cache,target=/root/.cache/pip "$VENV/bin/pip" install --no-warn-script-location .

FROM python:3.12.12-slim-bookworm AS controller
# Nothing in the final stage installs anything: pip goes, and with it any way to fetch code later.
RUN python -m pip uninstall --yes --quiet pip
COPY --from=build /opt/cutover /opt/cutover
ENV PATH=/opt/cutover/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# The same probe as the task definition's (terraform: health_check_command), for `docker run` too.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
# A command, not an entry point: the task definition replaces it with the same words.
CMD ["cutover", "run", "--host", "0.0.0.0", "--port", "8080"]
