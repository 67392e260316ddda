#!/bin/sh
# Install mecam as three systemd services grouped under mecam.target.
#
#   sudo systemd/install.sh              # after `cargo build --release --workspace --bins`
#   sudo systemd/install.sh --uninstall  # stop, disable, remove units and binaries
#
# Installs the binaries from target/release to /usr/local/bin, the units to
# /etc/systemd/system, a default /etc/mecam/mecam.toml (kept if one exists), a tmpfiles.d
# entry for /run/mecam, creates the system users `mecam-capture` (capture-svc: group `mecam`,
# plus `video` for the camera; the only user that can write the frame region) and `mecam`
# (motion-svc and web-svc, group `mecam`), then enables and (re)starts mecam.target. Running
# it again over an older install (one user `mecam` for all three) moves it to the two users.
# Uninstall keeps /etc/mecam and /var/lib/mecam (your config and recordings) and the users;
# remove them by hand if you mean to.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
prefix=${PREFIX:-/usr/local}
bindir="$prefix/bin"
unitdir=/etc/systemd/system
bins="capture-svc motion-svc web-svc"
units="mecam-capture.service mecam-motion.service mecam-web.service mecam.target"

die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"
command -v systemctl >/dev/null || die "systemctl not found: mecam's units need systemd"

uninstall() {
    systemctl disable --now mecam.target $units 2>/dev/null || true
    for u in $units; do rm -f "$unitdir/$u"; done
    for b in $bins; do rm -f "$bindir/$b"; done
    rm -f /etc/tmpfiles.d/mecam.conf
    systemctl daemon-reload
    echo "mecam uninstalled. Kept: /etc/mecam, /var/lib/mecam, users mecam and mecam-capture."
}

install_all() {
    for b in $bins; do
        [ -x "$root/target/release/$b" ] ||
            die "$root/target/release/$b missing: run 'cargo build --release --workspace --bins' first"
    done
    # Group mecam: the readers' group. An older install made it with user mecam.
    getent group mecam >/dev/null || groupadd --system mecam
    for user in mecam mecam-capture; do
        if ! getent passwd "$user" >/dev/null; then
            useradd --system --gid mecam --home-dir /nonexistent --no-create-home \
                --shell /usr/sbin/nologin "$user"
        fi
    done
    # Only capture-svc opens the camera. An older install put user mecam in video.
    if getent group video >/dev/null; then
        usermod -a -G video mecam-capture
        if id -nG mecam | tr ' ' '\n' | grep -qx video; then gpasswd -d mecam video >/dev/null; fi
    fi
    # Services of an older install still run as the old user, and their region and socket in
    # /run/mecam belong to it: stop them and clear the directory (capture-svc makes both anew
    # at start; nothing else lives there).
    if systemctl is-active --quiet mecam.target mecam-capture.service mecam-motion.service \
        mecam-web.service 2>/dev/null; then
        systemctl stop mecam.target $units
    fi
    if [ -d /run/mecam ]; then find /run/mecam -mindepth 1 -delete; fi

    install -d -m 0755 "$bindir"
    for b in $bins; do install -m 0755 "$root/target/release/$b" "$bindir/$b"; done
    for u in $units; do
        sed "s#/usr/local/bin/#$bindir/#" "$here/$u" > "$unitdir/$u"
        chmod 0644 "$unitdir/$u"
    done
    install -d -m 0755 /etc/mecam
    if [ ! -e /etc/mecam/mecam.toml ]; then
        install -m 0644 "$here/mecam.toml" /etc/mecam/mecam.toml
    else
        echo "keeping existing /etc/mecam/mecam.toml"
    fi
    install -d -m 0755 /etc/tmpfiles.d "$unitdir"
    install -m 0644 "$here/tmpfiles.conf" /etc/tmpfiles.d/mecam.conf
    systemd-tmpfiles --create /etc/tmpfiles.d/mecam.conf
    systemctl daemon-reload
    systemctl enable mecam.target
    systemctl restart mecam.target
    echo "mecam installed and started."
    # The first-visit form asks for this one-time code (or says a password is set).
    "$bindir/web-svc" --config /etc/mecam/mecam.toml --print-setup-code
}

case "${1:-}" in
    "") install_all ;;
    --uninstall) uninstall ;;
    *) die "usage: $0 [--uninstall]" ;;
esac
