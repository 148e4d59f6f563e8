# The reconciler image: `reconciler serve` (waitress on $PORT, 8080) as user 10001.
#
#   docker build -t reconciler .
#   gcloud builds submit --tag REGION-docker.pkg.dev/PROJECT/REPOSITORY/reconciler:TAG .
#
# Both stages use the same base image, so the venv built in the first runs unchanged in the
# second (its scripts point at /usr/local/bin/python3.11).
#
# The base image is named by tag here. Pin it by digest for a reproducible build: look the
# digest up where you build (`docker buildx imagetools inspect python:3.11-slim-bookworm`, the
# "Digest:" of the index) and pass it,
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
# or write it below. No digest is committed because none was verified against the registry.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The Go toolchain that builds helm: the same release as the one tools/build-helm.sh used for the
# checksum below (a different toolchain builds different bytes). Pin it by digest as above.
ARG GO_IMAGE=golang:1.26.8-bookworm

# helm (helm.sh/helm/v4, for sites delivered by a Helm release), built from source like the
# binary the tests run: the wrapper module tools/helm, every module checked against its go.sum
# (and Go's checksum database) before anything is compiled, then a reproducible build
# (-trimpath, no cgo, no VCS stamp, the version stamped as helm's Makefile does, the flags of
# tools/build-helm.sh) whose result must have the pinned SHA-256 or the build stops.
# HELM_SHA256 is for linux/amd64; building for another platform, pass its own:
#   docker build --build-arg HELM_SHA256=<sha256 of that platform's build> .
FROM ${GO_IMAGE} AS helm
ARG HELM_VERSION=v4.3.2
ARG HELM_SHA256=e4bad970668fd9c3c6e08b2a5f14dc5704ac09e7776ecad0fb8b54e3a624492f
ENV CGO_ENABLED=0 \
    GOTOOLCHAIN=local \
    GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
WORKDIR /src
COPY tools/helm/go.mod tools/helm/go.sum tools/helm/main.go ./
RUN go mod download && go mod verify
RUN vpkg=helm.sh/helm/v4/internal/version \
    && go build -ldflags "-s -w -X $vpkg.version=${HELM_VERSION} -X $vpkg.gitTreeState=clean" -o /out/helm . \
    && echo "${HELM_SHA256}  /out/helm" | sha256sum -c - \
    && /out/helm version --template '{{.Version}}' | grep -qx "${HELM_VERSION}"


FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# The build tools themselves (pip, setuptools, wheel), pinned and checked against their hashes
# in build-requirements.lock before anything else runs: nothing below uses the base image's
# own pip, and the reconciler's wheel is built with these, not with whatever a build
# isolation environment would fetch.
COPY build-requirements.lock ./
RUN python -m pip install --require-hashes --no-deps --only-binary=:all: \
        -r build-requirements.lock

# Every pinned dependency as a wheel, each checked against its hash in requirements.lock.
# Binary wheels only, so nothing is compiled and no compiler is needed. The lock also pins
# the test tools (it is compiled with --extra test): they are downloaded here, but only what
# the reconciler declares is installed below.
COPY requirements.lock ./
RUN pip wheel --require-hashes --no-deps --only-binary=:all: \
        --wheel-dir /wheels -r requirements.lock

# The reconciler itself as a wheel, stamped with the commit it is built from, which
# `reconciler --version` prints (the build context has no .git):
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t reconciler:"$VERSION" .
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
ARG GIT_COMMIT=""
RUN printf '%s\n' "$GIT_COMMIT" > reconciler/COMMIT \
    && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# The runtime venv, without pip: the reconciler and its dependencies, resolved from the
# verified wheels only (no index), with bytecode compiled now since the image's root
# filesystem is read-only at run time.
RUN python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-index --find-links /wheels \
        /wheels/reconciler-*.whl \
    && /opt/venv/bin/reconciler --version


FROM ${PYTHON_IMAGE}
ARG GIT_COMMIT=""
LABEL org.opencontainers.image.revision="${GIT_COMMIT}"
LABEL org.opencontainers.image.title="reconciler" \
      org.opencontainers.image.description="Continuous deployment for Kubernetes: keeps every site's Deployment on the image of its GitHub branch head." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=8080 \
    RECONCILER_CONFIG=/etc/reconciler/sites.toml
COPY --from=builder /opt/venv /opt/venv
COPY --from=helm /out/helm /usr/local/bin/helm
# Numeric, so Kubernetes can verify runAsNonRoot; owns nothing in the image.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["reconciler"]
CMD ["serve"]
