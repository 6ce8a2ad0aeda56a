#!/usr/bin/env bash
# Prepares what the container test and bench need on a Debian machine without Docker Hub:
# Docker's engine (Debian's docker.io) and debootstrap, then a local base image, Debian
# bookworm (Python 3.11, as python:3.11-slim) made with debootstrap from Debian's mirror
# and kept as a tarball for `docker import`. Prints the tarball's path on its last line.
#
# Usage: scripts/container-base.sh [--no-install]
#   --no-install: do not apt-get install anything; fail if the engine or debootstrap is missing.
# The tarball is cached under ${MINIME_HOME:-~/.cache/minime}/images/, so a second run
# takes no time; delete it to rebuild.
set -euo pipefail

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    *) echo "container-base.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

SUITE=bookworm
MIRROR=${MINIME_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv: the Dockerfile makes a venv (bookworm's pip refuses system installs);
# libgomp1: llama.cpp's OpenMP runtime; ca-certificates: pip over HTTPS in the image.
PACKAGES=python3,python3-venv,libgomp1,ca-certificates
CACHE=${MINIME_HOME:-$HOME/.cache/minime}/images
key=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)
tarball="$CACHE/debian-$SUITE-python-$key.tar"

if [ "$(id -u)" = 0 ]; then as_root=""; else as_root="sudo -n"; fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -s "$tarball" ] || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$install" = 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "container-base.sh: missing ${need[*]} (install with apt-get)" >&2
    exit 1
  fi
  echo "Installing ${need[*]} from Debian" >&2
  # The lock timeout: another setup step may be installing a package at the same time.
  { $as_root apt-get -o DPkg::Lock::Timeout=300 update -q \
      && $as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
        install -y -q --no-install-recommends "${need[@]}"; } >&2
fi

if [ ! -s "$tarball" ]; then
  echo "Making the $SUITE base image with debootstrap (about a minute, once)" >&2
  mkdir -p "$CACHE"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap '$as_root rm -rf "$root"' EXIT
  $as_root debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >&2
  # Smaller image: no package lists, caches, docs or man pages.
  $as_root rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* "$root"/usr/share/man/*
  $as_root tar -C "$root" -c . >"$tarball.part"
  mv "$tarball.part" "$tarball"
fi
echo "$tarball"
