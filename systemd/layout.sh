# What mecam installs, and where: the one list that systemd/install.sh (built from source) and
# scripts/package (the .deb) both install from. POSIX sh, sourced, not run.
#
#   mecam_layout source PREFIX | mecam_layout package
#   mecam_install_files BIN_DIR CHECKOUT DESTDIR
#   mecam_files        # prints "kind mode source destination", one line per file
#
# The two layouts:
#                        install.sh (PREFIX=/usr/local)   the .deb
#   binaries             $PREFIX/bin                      /usr/bin
#   units, mecam.target  /etc/systemd/system              /usr/lib/systemd/system
#   tmpfiles, sysusers   /etc/{tmpfiles,sysusers}.d       /usr/lib/{tmpfiles,sysusers}.d
#   README               $PREFIX/share/doc/mecam          /usr/share/doc/mecam
#   config               /etc/mecam/mecam.toml            /etc/mecam/mecam.toml (a conffile)
#
# The units in systemd/ name /usr/local (ExecStart=, Documentation=); installing rewrites
# /usr/local/ to the layout's prefix, so each unit names the binaries and the README where
# this list puts them.

# Set the directories of a layout: `source PREFIX` (install.sh) or `package` (the .deb).
mecam_layout() {
    case "$1" in
        source) mecam_prefix=$2 mecam_sysdir=/etc ;;
        package) mecam_prefix=/usr mecam_sysdir=/usr/lib ;;
        *) echo "mecam_layout: unknown layout '$1' (source PREFIX | package)" >&2; return 1 ;;
    esac
}

# Every installed file: kind (bin: from the build's output directory; unit: /usr/local
# rewritten; conffile: the administrator's, never overwritten; file), mode, source (relative
# to the checkout, or to the build's output directory for bin), destination.
mecam_files() {
    bindir=$mecam_prefix/bin
    docdir=$mecam_prefix/share/doc/mecam
    unitdir=$mecam_sysdir/systemd/system
    cat <<EOF
bin 0755 capture-svc $bindir/capture-svc
bin 0755 motion-svc $bindir/motion-svc
bin 0755 web-svc $bindir/web-svc
unit 0644 systemd/mecam-capture.service $unitdir/mecam-capture.service
unit 0644 systemd/mecam-motion.service $unitdir/mecam-motion.service
unit 0644 systemd/mecam-web.service $unitdir/mecam-web.service
unit 0644 systemd/mecam.target $unitdir/mecam.target
file 0644 systemd/tmpfiles.conf $mecam_sysdir/tmpfiles.d/mecam.conf
file 0644 systemd/sysusers.conf $mecam_sysdir/sysusers.d/mecam.conf
file 0644 README.md $docdir/README.md
conffile 0644 systemd/mecam.toml /etc/mecam/mecam.toml
EOF
}

# Install every file of the layout under DESTDIR ("" for the live system): binaries from
# BIN_DIR, the rest from CHECKOUT. A conffile that already exists is kept.
mecam_install_files() {
    mecam_bin=$1 mecam_src=$2 mecam_dest=$3
    mecam_files | while read -r kind mode src dst; do
        case "$kind" in
            bin) from=$mecam_bin/$src ;;
            *) from=$mecam_src/$src ;;
        esac
        [ -f "$from" ] || { echo "mecam_install_files: $from is missing" >&2; return 1; }
        install -d -m 0755 "$mecam_dest$(dirname "$dst")"
        case "$kind" in
            unit)
                sed "s#/usr/local/#$mecam_prefix/#g" "$from" > "$mecam_dest$dst"
                chmod "$mode" "$mecam_dest$dst"
                ;;
            conffile)
                if [ -e "$mecam_dest$dst" ]; then
                    echo "keeping existing $dst"
                else
                    install -m "$mode" "$from" "$mecam_dest$dst"
                fi
                ;;
            *) install -m "$mode" "$from" "$mecam_dest$dst" ;;
        esac
    done
}
