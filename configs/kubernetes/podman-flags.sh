#!/usr/bin/env bash
# Print the extra `podman run`/`podman build` flags this host needs (one per line; none when
# podman's defaults work). Hosts with hybrid cgroups refuse crun, podman's default runtime,
# and hosts that are themselves containers refuse podman's default rlimits; runc with
# explicit nofile/nproc limits runs there. Usage: podman-flags.sh IMAGE (an image on disk).
set -euo pipefail
image=${1:?usage: podman-flags.sh IMAGE}
fallback=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
if podman run --rm --network none "$image" true >/dev/null 2>&1; then
    exit 0
fi
if podman run --rm --network none "${fallback[@]}" "$image" true >/dev/null 2>&1; then
    printf '%s\n' "${fallback[@]}"
    exit 0
fi
echo "podman cannot start a container from $image, with or without ${fallback[*]}" >&2
exit 1
