#!/usr/bin/env bash
# Builds the distribution tarball from already built binaries:
#
#   scripts/dist.sh <dir holding streambus and sbctl> [<output dir>]
#
# `make dist` runs it on the release binaries. The release profile keeps line tables (RocksDB's
# included) for readable backtraces, which makes `streambus` about 500 MB; the tarball gets
# binaries stripped of debug info, and the debug info goes to a separate
# `<name>-debug.tar.gz` (`objcopy --only-keep-debug`, linked back with `--add-gnu-debuglink`,
# so gdb and perf find it when it sits next to the binary). Prints both tarballs' sizes.
set -euo pipefail

bin_dir="${1:?usage: scripts/dist.sh <binary dir> [<output dir>]}"
repo="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${2:-$repo/dist}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)"
[ -n "$version" ] || { echo "dist: no workspace version in Cargo.toml" >&2; exit 1; }
name="streambus-$version-$(uname -s | tr '[:upper:]' '[:lower:]')-$(uname -m)"
for tool in objcopy strip tar gzip; do
    command -v "$tool" >/dev/null || { echo "dist: $tool is missing (binutils, tar, gzip)" >&2; exit 1; }
done
for bin in streambus sbctl; do
    [ -x "$bin_dir/$bin" ] || { echo "dist: $bin_dir/$bin is missing; build it first" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
stage="$work/$name"
# The debug tarball has the same top directory: unpacked over the main one, each `.debug` file
# lands next to its binary, where gdb and perf look for it.
debug_root="$work/debug"
debug="$debug_root/$name/bin"
mkdir -p "$stage/bin" "$stage/config" "$stage/systemd" "$stage/prometheus" "$stage/grafana" "$debug"
for bin in streambus sbctl; do
    objcopy --only-keep-debug "$bin_dir/$bin" "$debug/$bin.debug"
    strip --strip-debug -o "$stage/bin/$bin" "$bin_dir/$bin"
    # The link names the debug file and carries its CRC, so a debugger checks the match.
    (cd "$debug" && objcopy --add-gnu-debuglink="$bin.debug" "$stage/bin/$bin")
done
cp "$repo"/deploy/config/*.toml "$stage/config/"
cp "$repo/deploy/systemd/streambus.service" "$stage/systemd/"
cp "$repo"/deploy/prometheus/*.yml "$stage/prometheus/"
cp "$repo"/deploy/grafana/*.json "$stage/grafana/"
cp "$repo/deploy/README.md" "$stage/DEPLOY.md"
cp "$repo/README.md" "$stage/README.md"
"$stage/bin/streambus" --version >/dev/null

mkdir -p "$out_dir"
tar -C "$work" -czf "$out_dir/$name.tar.gz" "$name"
tar -C "$debug_root" -czf "$out_dir/$name-debug.tar.gz" "$name"
size() { du -h "$1" | cut -f1; }
echo "dist: $out_dir/$name.tar.gz ($(size "$out_dir/$name.tar.gz"); streambus $(size "$stage/bin/streambus"), sbctl $(size "$stage/bin/sbctl") unpacked)"
echo "dist: $out_dir/$name-debug.tar.gz ($(size "$out_dir/$name-debug.tar.gz")): debug info; unpack it where the main tarball was unpacked"
