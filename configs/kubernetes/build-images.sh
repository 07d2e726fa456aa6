#!/usr/bin/env bash
# Build the two images of configs/kubernetes/ with podman or docker (whichever is present;
# ENGINE=docker|podman picks one):
#   ghcr.io/torchserve-adapt/torchserve-adapt-sidecar:$VERSION      (init container + sidecar)
#   ghcr.io/torchserve-adapt/torchserve-adapt-torchserve:$VERSION   (TorchServe + demo models)
# Environment:
#   BASE_IMAGE   Debian bookworm + Python 3.11 image (default python:3.11-slim-bookworm). When
#                the default is neither on disk nor pullable (no registry reachable), a local
#                base, localhost/tsadapt-base:bookworm, is made with debootstrap (root,
#                `apt-get install debootstrap`) and used instead.
#   CA_BUNDLE    PEM bundle pip trusts inside the build (a TLS-intercepting proxy); default:
#                $PIP_CERT, else the `cert` of the host's pip config, else none. Passed as a
#                build secret: mounted by the RUN steps that install, in no layer.
#   TORCH_WHEEL  a torch CPU wheel file to install instead of downloading one; default: a
#                torch-$TORCH_VERSION+cpu wheel in the host pip config's find-links, if any.
#   TORCH_VERSION (default 2.13.0), VERSION (image tag, default: setup.cfg's version).
# Prints each image's size and the build time at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/configs/kubernetes"
cd "$ROOT"

ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
command -v "$ENGINE" >/dev/null || { echo "neither podman nor docker is installed" >&2; exit 1; }
DEFAULT_BASE=python:3.11-slim-bookworm
LOCAL_BASE=localhost/tsadapt-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$DEFAULT_BASE}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
VERSION=${VERSION:-$(sed -n 's/^version *= *//p' setup.cfg)}
REPO=${REPO:-ghcr.io/torchserve-adapt}
pip_config() { python3 -m pip config get "$1" 2>/dev/null || true; }

have_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

make_local_base() {
    command -v debootstrap >/dev/null || {
        echo "cannot pull $DEFAULT_BASE and debootstrap is missing (apt-get install debootstrap)" >&2
        exit 1
    }
    local dir
    dir=$(mktemp -d /var/tmp/tsadapt-base.XXXXXX)
    echo "making $LOCAL_BASE with debootstrap in $dir"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$dir" http://deb.debian.org/debian >"$dir.log" 2>&1 \
        || { echo "debootstrap failed, see $dir.log" >&2; exit 1; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$dir" "$dir.log"
}

if ! have_image "$BASE_IMAGE"; then
    if ! timeout 120 "$ENGINE" pull "$BASE_IMAGE" >/dev/null 2>&1; then
        [ "$BASE_IMAGE" = "$DEFAULT_BASE" ] || { echo "cannot pull $BASE_IMAGE" >&2; exit 1; }
        echo "cannot pull $BASE_IMAGE: using a local Debian bookworm base, $LOCAL_BASE"
        have_image "$LOCAL_BASE" || make_local_base
        BASE_IMAGE=$LOCAL_BASE
    fi
fi

FLAGS=()
if [ "$ENGINE" = podman ]; then
    mapfile -t FLAGS < <("$HERE/podman-flags.sh" "$BASE_IMAGE")
fi

# the optional local torch wheel travels in the context's build/wheels/
rm -rf build/wheels && mkdir -p build/wheels
if [ -z "${TORCH_WHEEL:-}" ]; then
    for dir in $(pip_config global.find-links) $(pip_config :env:.find-links); do
        for whl in "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-*.whl; do
            [ -f "$whl" ] && TORCH_WHEEL=$whl
        done
    done
fi
if [ -n "${TORCH_WHEEL:-}" ]; then
    echo "torch from $TORCH_WHEEL"
    cp "$TORCH_WHEEL" build/wheels/
fi

CA_BUNDLE=${CA_BUNDLE:-${PIP_CERT:-$(pip_config global.cert)}}
SECRET=$(mktemp)
trap 'rm -f "$SECRET"' EXIT
if [ -n "$CA_BUNDLE" ]; then
    echo "pip inside the build trusts $CA_BUNDLE"
    cat "$CA_BUNDLE" >"$SECRET"
fi
export DOCKER_BUILDKIT=1

start=$(date +%s)
for target in sidecar torchserve; do
    tag="$REPO/torchserve-adapt-$target:$VERSION"
    echo "building $tag on $BASE_IMAGE"
    "$ENGINE" build "${FLAGS[@]}" \
        -f "$HERE/images/Dockerfile" --target "$target" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_VERSION="$TORCH_VERSION" \
        --secret id=ca_bundle,src="$SECRET" \
        -t "$tag" .
done
echo "built in $(( $(date +%s) - start )) s"
for target in sidecar torchserve; do
    tag="$REPO/torchserve-adapt-$target:$VERSION"
    printf '%s %s bytes\n' "$tag" "$("$ENGINE" image inspect --format '{{.Size}}' "$tag")"
done
