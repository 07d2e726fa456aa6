#!/usr/bin/env bash
# `make pod-report`: build the images (configs/kubernetes/build-images.sh), run the pod of
# configs/kubernetes/base with podman and test it (tests/test_kubernetes_pod.py,
# tests/test_container_images.py), and write what happened to docs/results/kubernetes-pod.md.
# COLD=1 first removes the two images, podman's build cache and the local debootstrap base
# (a build from nothing, when no base image can be pulled).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=docs/results/kubernetes-pod.md
PY=${PY:-.venv/bin/python}
VERSION=$(sed -n 's/^version *= *//p' setup.cfg)
IMAGES=(ghcr.io/torchserve-adapt/torchserve-adapt-sidecar:$VERSION
        ghcr.io/torchserve-adapt/torchserve-adapt-torchserve:$VERSION)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "${COLD:-0}" = 1 ]; then
    podman rmi --force "${IMAGES[@]}" localhost/tsadapt-base:bookworm >/dev/null 2>&1 || true
    podman image prune --force >/dev/null 2>&1 || true
    podman builder prune --force >/dev/null 2>&1 || true
fi
start=$(date +%s)
status=0
nice -n 10 configs/kubernetes/build-images.sh >"$work/build.txt" 2>&1 || status=$?
build_s=$(( $(date +%s) - start ))
if [ $status -ne 0 ]; then
    tail -40 "$work/build.txt" >&2
    echo "the image build failed ($status); no report written" >&2
    exit $status
fi
cached=$(grep -c '^--> Using cache' "$work/build.txt" || true)
steps=$(grep -cE '^\[[0-9]/[0-9]\] STEP|^STEP' "$work/build.txt" || true)
start=$(date +%s)
test_status=0
"$PY" -m pytest -m container -v -rfEs -p no:cacheprovider --durations=5 \
    tests/test_container_images.py tests/test_kubernetes_pod.py >"$work/pytest.txt" 2>&1 \
    || test_status=$?
test_s=$(( $(date +%s) - start ))

{
    echo "# Kubernetes pod, run with podman"
    echo
    echo "Written by \`make pod-report\` (configs/kubernetes/pod-report.sh$( [ "${COLD:-0}" = 1 ] && echo ', COLD=1' )) on $(date -u +%Y-%m-%d), $(nproc) cores, $(podman --version)."
    echo "The images are built by configs/kubernetes/build-images.sh; the pod is configs/kubernetes/base's"
    echo "Deployment, rendered by tests/k8s_render.py and started by tests/k8s_pod.py (podman pod"
    echo "create + podman run --pod, init container first), ports on 127.0.0.1 only. No cluster runs"
    echo "here: the Service, the replicas, the HPA and KEDA objects of the overlays are not exercised"
    echo "(docs/kubernetes.md)."
    echo
    echo "## Build"
    echo
    echo "$build_s s wall for both images, $cached of $steps build steps from podman's cache."
    echo
    echo '| image | size (bytes) | size (MB) |'
    echo '|---|---|---|'
    for image in "${IMAGES[@]}"; do
        size=$(podman image inspect --format '{{.Size}}' "$image")
        echo "| \`$image\` | $size | $(( size / 1000000 )) |"
    done
    echo
    echo "Base image and build notes (the script's own lines):"
    echo
    echo '```'
    grep -vE '^(\[|STEP|-->|COMMIT|Getting|Copying|Writing|Storing|[a-f0-9]{64}$| |Successfully|Collecting|Downloading|Installing|Requirement|Processing|Building|Created|Stored|Get:|Fetched|Reading|Selecting|Preparing|Unpacking|Setting up|update-alternatives|Processing triggers|debconf|Hit:|Ign:|Attempting|Found existing|Uninstalling|Building dependency|The following|Need to get|After this|0 upgraded|Suggested|Recommended|Adding|done|invoke-rc|Warning|WARNING|Using|Looking|Saved|Running|  )' "$work/build.txt" \
        | grep -vE '^$|^\(Reading|^No schema|^No JRE' | tail -20
    echo '```'
    echo
    echo "## Pod tests ($test_s s wall, exit status $test_status)"
    echo
    echo '```'
    grep -E '(PASSED|FAILED|SKIPPED|ERROR) *\[|^(FAILED|ERROR|SKIPPED) |=====|s (setup|call|teardown) ' "$work/pytest.txt" \
        | sed "s#$ROOT/##g"
    echo '```'
} >"$OUT"
echo "wrote $OUT"
exit $test_status
