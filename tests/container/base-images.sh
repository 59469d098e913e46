#!/usr/bin/env bash
# Makes, locally, every base image the Dockerfile names that podman does not
# have yet. For machines that reach package repositories but no image
# registry: each stand-in is built from the same Debian packages as the
# public image. `scratch` needs nothing.
#
# The stand-in trusts the CA certificates this machine trusts in
# /usr/local/share/ca-certificates/ (such as a TLS-inspecting proxy's), the
# way a public image trusts the public CAs. The Dockerfile itself knows
# nothing about that.
#
# Usage: tests/container/base-images.sh [DOCKERFILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
dockerfile="${1:-Dockerfile}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# Base images named in FROM lines, less `scratch` and earlier stages.
base_images() {
    awk 'toupper($1) == "FROM" {
            image = ""; stage = ""
            for (i = 2; i <= NF; i++) {
                if ($i ~ /^--/) continue
                if (image == "") { image = $i; continue }
                if (toupper($i) == "AS" && i < NF) { stage = $(i + 1); break }
            }
            if (image != "scratch" && !(image in stages)) print image
            if (stage != "") stages[stage] = 1
         }' "$1" | sort -u
}

make_debian() { # IMAGE SUITE
    local image="$1" suite="$2" root
    root="$(mktemp -d /var/tmp/berth-base.XXXXXX)"
    # shellcheck disable=SC2064 # expand now: the folder of this call
    trap "rm -rf '$root'" EXIT
    echo "making $image with debootstrap ($suite, minbase) in $root"
    debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" "$mirror" \
        >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
    rm -f "$root.log"
    # The public image's package sources.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    local crts=(/usr/local/share/ca-certificates/*.crt)
    if [ -e "${crts[0]}" ]; then
        cp "${crts[@]}" "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/tmp/*
    tar --numeric-owner -C "$root" -c . |
        podman import --change 'CMD ["bash"]' - "$image" >/dev/null
    rm -rf "$root"
    trap - EXIT
    echo "made $image"
}

for image in $(base_images "$dockerfile"); do
    if podman image exists "$image"; then
        echo "base image $image: present"
        continue
    fi
    case "$image" in
        docker.io/library/debian:bookworm-slim)
            make_debian "$image" bookworm ;;
        *)
            echo "base image $image: not present, and this script does not know how to make it" >&2
            exit 1 ;;
    esac
done
