#!/bin/sh
# Install mecam as three systemd services grouped under mecam.target, from a source checkout.
# (On a Pi, the .deb from scripts/package does the same: README.md.)
#
#   sudo systemd/install.sh              # after `cargo build --release --workspace --bins`
#   sudo systemd/install.sh --uninstall  # stop, disable, remove units and binaries
#
# What goes where is systemd/layout.sh's list, shared with the .deb: the binaries from
# target/release to $PREFIX/bin (PREFIX=/usr/local), the units to /etc/systemd/system, a default
# /etc/mecam/mecam.toml (kept if one exists), tmpfiles.d and sysusers.d entries in /etc, the
# README to $PREFIX/share/doc/mecam (the units' Documentation=). Creates the system users
# (systemd/sysusers.conf) `mecam-capture` (capture-svc: group `mecam`, plus `video` for the
# camera; the only user that can write the frame region) and `mecam` (motion-svc and web-svc,
# group `mecam`), prints the first-run setup code, then enables and (re)starts mecam.target.
# Running it again over an older install (one user `mecam` for all three) moves it to the two
# users. Uninstall keeps /etc/mecam and /var/lib/mecam (your config and recordings) and the
# users; remove them by hand if you mean to.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
prefix=${PREFIX:-/usr/local}
units="mecam-capture.service mecam-motion.service mecam-web.service mecam.target"
# shellcheck source=systemd/layout.sh
. "$here/layout.sh"
mecam_layout source "$prefix"

die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"
command -v systemctl >/dev/null || die "systemctl not found: mecam's units need systemd"

uninstall() {
    systemctl disable --now mecam.target $units 2>/dev/null || true
    mecam_files | while read -r kind _ _ dst; do
        if [ "$kind" != conffile ]; then rm -f "$dst"; fi
    done
    systemctl daemon-reload
    echo "mecam uninstalled. Kept: /etc/mecam, /var/lib/mecam, users mecam and mecam-capture."
}

install_all() {
    mecam_files | while read -r kind _ src _; do
        [ "$kind" != bin ] || [ -x "$root/target/release/$src" ] ||
            die "$root/target/release/$src missing: run 'cargo build --release --workspace --bins' first"
    done
    # Users mecam-capture (groups mecam, video) and mecam (group mecam); users that exist (an
    # older install's mecam) are kept.
    systemd-sysusers "$here/sysusers.conf"
    # Only capture-svc opens the camera. An older install put user mecam in video.
    if id -nG mecam | tr ' ' '\n' | grep -qx video; then gpasswd -d mecam video >/dev/null; fi
    # Services of an older install still run as the old user, and their region and socket in
    # /run/mecam belong to it: stop them and clear the directory (capture-svc makes both anew
    # at start; nothing else lives there).
    if systemctl is-active --quiet mecam.target mecam-capture.service mecam-motion.service \
        mecam-web.service 2>/dev/null; then
        systemctl stop mecam.target $units
    fi
    if [ -d /run/mecam ]; then find /run/mecam -mindepth 1 -delete; fi

    mecam_install_files "$root/target/release" "$root" ""
    systemd-tmpfiles --create /etc/tmpfiles.d/mecam.conf
    systemctl daemon-reload
    systemctl enable mecam.target
    systemctl restart mecam.target
    echo "mecam installed and started."
}

case "${1:-}" in
    "") install_all ;;
    --uninstall) uninstall ;;
    *) die "usage: $0 [--uninstall]" ;;
esac
