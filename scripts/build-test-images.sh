#!/usr/bin/env bash
# Builds the Debian systemd images the Molecule scenarios boot, with debootstrap and
# `podman import` (no registry is reachable). Each image is tagged
# localhost/sdapi-test:<suite>-<recipe hash> plus the moving alias :<suite>; an image
# whose recipe hash already exists is not rebuilt.
# Usage: scripts/build-test-images.sh [suite ...]   (default: bookworm trixie)
set -euo pipefail

mirror="${SDAPI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
repo="localhost/sdapi-test"
# openssh-server and sudo: real hosts have both; the firewall tests prove port 22 stays
# open, and playbooks use become as they would on a real host.
packages="systemd,systemd-sysv,python3,dbus,iproute2,ca-certificates,openssh-server,sudo"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/../tests/podman/containers.conf}"

# Bump when a build step below changes what ends up in the image; edits that do not
# (comments, messages) then cost no rebuild.
recipe_version=1

recipe_hash() {
  echo "$recipe_version $1 $packages minbase" | sha256sum | cut -c1-12
}

build_one() {
  local suite="$1" tag rootfs started
  tag="$suite-$(recipe_hash "$suite")"
  if podman image exists "$repo:$tag"; then
    podman tag "$repo:$tag" "$repo:$suite"
    echo "image $repo:$tag is current, not rebuilt"
    return 0
  fi
  started=$(date +%s)
  rootfs="$(mktemp -d /var/tmp/sdapi-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' RETURN
  echo "building $repo:$tag with debootstrap from $mirror"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    > "$rootfs.log" 2>&1 || { tail -30 "$rootfs.log"; rm -f "$rootfs.log"; return 1; }
  rm -f "$rootfs.log"
  # A container has no console gettys to run; masking them keeps the boot quiet and
  # lets `systemctl is-system-running` reach "running".
  chroot "$rootfs" systemctl mask getty@tty1.service console-getty.service \
    systemd-firstboot.service >/dev/null 2>&1 || true
  # Image-local apt lists and caches are rebuilt by the roles; keep the image small.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | podman import --quiet \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL=SIGRTMIN+3' \
    - "$repo:$tag" >/dev/null
  podman tag "$repo:$tag" "$repo:$suite"
  echo "built $repo:$tag in $(( $(date +%s) - started ))s"
  # Images of earlier recipes for this suite are dead weight.
  podman images --format '{{.Repository}}:{{.Tag}}' "$repo" | grep "^$repo:$suite-" \
    | grep -vx "$repo:$tag" | xargs -r podman rmi >/dev/null 2>&1 || true
}

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)
for suite in "${suites[@]}"; do
  build_one "$suite"
done
