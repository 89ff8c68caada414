# ocp-mock in a container: the OCP task API mock on 0.0.0.0:8080.
#
#   docker build -t ocp-mock .
#   docker run --rm -p 127.0.0.1:8080:8080 ocp-mock
#   docker run --rm -p 127.0.0.1:8080:8080 ocp-mock --seed 7 --cors-origin http://localhost:4200   # more serve options
#
# The admin API (/__mock: reset, force a state) is on only when the mock listens on a loopback address, so in a
# container (0.0.0.0) it is OFF unless an admin token is given; every /__mock call must then carry it:
#
#   docker run --rm -p 127.0.0.1:8080:8080 -e OCP_MOCK_ADMIN_TOKEN=change-me ocp-mock
#   curl -X POST -H 'X-Mock-Admin-Token: change-me' http://127.0.0.1:8080/__mock/reset
#
# Users: the defaults are admin/admin and viewer/viewer (access keys admin-ak/admin-sk, viewer-ak/viewer-sk).
# Mount a users file and pass --users /users.yaml to change them. /docs serves the interactive API page.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (no .venv, tests or benchmarks in the image).
# mock_server/openapi.yaml is a link to ../openapi.yaml, so both are copied.
COPY pyproject.toml README.md openapi.yaml ./
COPY mock_server ./mock_server
COPY contracts ./contracts
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 ocp
USER ocp
WORKDIR /home/ocp

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/openapi.json', timeout=2)"]

# Extra arguments given to `docker run IMAGE ...` are appended to these.
ENTRYPOINT ["ocp-mock", "serve", "--host", "0.0.0.0", "--port", "8080"]
