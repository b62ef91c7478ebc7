# syntax=docker/dockerfile:1.7
# The sample conversion job's image: the cutover_job helper and examples/sample_worker.py, run as
# the Batch job definition (examples/batch-job-definition.json, terraform: job_image) runs it.
# Built from the repository root:
#
#   docker build -f examples/job.Dockerfile -t excel-export-job:1.0.0 .
#
# Its working directory mirrors a checkout (examples/sample_worker.py beside cutover_job/), so the
# job definition's command and the buildspec's build command are the same words in both places.

FROM python:3.12.12-slim-bookworm AS build
ENV VENV=/opt/job PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY examples/job-requirements.txt ./
RUN python -m venv "$VENV"
RUN --mount=type=cache,target=/root/.cache/pip "$VENV/bin/pip" install -r job-requirements.txt

FROM python:3.12.12-slim-bookworm AS job
RUN python -m pip uninstall --yes --quiet pip
COPY --from=build /opt/job /opt/job
WORKDIR /job
COPY cutover_job/ cutover_job/
COPY examples/sample_worker.py examples/sample_worker.py
ENV PATH=/opt/job/bin:$PATH \
    PYTHONPATH=/job \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CUTOVER_OUTPUT_DIR=/tmp/cutover-output
USER 10001:10001
# A job runs to its end and is judged by its exit status and its result, not probed.
HEALTHCHECK NONE
CMD ["python3", "examples/sample_worker.py"]
