#!/bin/sh
# Installs alien-agent for the alien-manager at @MANAGER_URL@ and starts it.
#
#   curl -fsSL @MANAGER_URL@/install/agent.sh | sh -s -- --token TOKEN --name NAME
#
# Options:
#   --token TOKEN      a deployment-group token (ax_dg_..., with --name) or a deployment token;
#                      also read from ALIEN_AGENT_TOKEN
#   --name NAME        the deployment's name in its group (with a group token)
#   --prefix DIR       install into DIR/bin (default: /usr/local as root, else ~/.local)
#   --state-dir DIR    where the agent keeps its state (default: /var/lib/alien-agent as root,
#                      else ~/.local/state/alien-agent)
#   --no-start         install only
#
# The agent is alien-agent @VERSION@ (this manager's version) from @RELEASES_URL@, checked
# against its published SHA-256 before anything is installed. Started, it runs in the
# foreground: run this under your service manager, or with --no-start and start it yourself.
set -eu

manager_url='@MANAGER_URL@'
releases_url='@RELEASES_URL@'
version='@VERSION@'

fail() {
    printf 'alien-agent install: %s\n' "$*" >&2
    exit 1
}

token=${ALIEN_AGENT_TOKEN:-}
name=
prefix=
state_dir=
start=1
while [ $# -gt 0 ]; do
    case $1 in
        --token | --name | --prefix | --state-dir)
            [ $# -ge 2 ] || fail "$1 needs a value"
            case $1 in
                --token) token=$2 ;;
                --name) name=$2 ;;
                --prefix) prefix=$2 ;;
                --state-dir) state_dir=$2 ;;
            esac
            shift 2
            ;;
        --no-start)
            start=0
            shift
            ;;
        -h | --help)
            echo 'usage: sh agent.sh --token TOKEN [--name NAME] [--prefix DIR] [--state-dir DIR] [--no-start]'
            exit 0
            ;;
        *) fail "unknown argument $1 (options: --token, --name, --prefix, --state-dir, --no-start)" ;;
    esac
done
if [ "$start" = 1 ]; then
    [ -n "$token" ] || fail "--token is required (a deployment-group token ax_dg_... or a deployment token)"
    case $token in
        ax_dg_*) [ -n "$name" ] || fail "--name is required with a deployment-group token" ;;
    esac
fi

case $(uname -s) in
    Linux) os=unknown-linux-gnu ;;
    Darwin) os=apple-darwin ;;
    *) fail "no alien-agent build for $(uname -s)" ;;
esac
case $(uname -m) in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch64 ;;
    *) fail "no alien-agent build for $(uname -m)" ;;
esac
target=$arch-$os

if [ "$(id -u)" = 0 ]; then
    : "${prefix:=/usr/local}"
    : "${state_dir:=/var/lib/alien-agent}"
else
    : "${prefix:=$HOME/.local}"
    : "${state_dir:=$HOME/.local/state/alien-agent}"
fi

# The tools, chosen before anything is downloaded: a missing one is said once, plainly (a
# `fail` inside `$(...)` or behind `2>/dev/null` would not be).
if command -v curl >/dev/null 2>&1; then
    downloader=curl
elif command -v wget >/dev/null 2>&1; then
    downloader=wget
else
    fail "neither curl nor wget is installed; nothing was installed"
fi
if command -v sha256sum >/dev/null 2>&1; then
    hasher=sha256sum
elif command -v shasum >/dev/null 2>&1; then
    hasher=shasum
else
    fail "neither sha256sum nor shasum is installed; nothing was installed"
fi

download() {
    case $downloader in
        curl) curl -fsSL -o "$2" "$1" ;;
        wget) wget -q -O "$2" "$1" ;;
    esac
}

sha256() {
    case $hasher in
        sha256sum) sha256sum "$1" | cut -d ' ' -f 1 ;;
        shasum) shasum -a 256 "$1" | cut -d ' ' -f 1 ;;
    esac
}

file=alien-agent-$target.tar.gz
url=$releases_url/alien-agent/$version/$file
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
download "$url" "$tmp/$file" 2>/dev/null || fail "cannot download alien-agent $version for $target from $url; nothing was installed"
download "$url.sha256" "$tmp/$file.sha256" 2>/dev/null || fail "cannot download the checksum $url.sha256; nothing was installed"
expected=$(cut -d ' ' -f 1 <"$tmp/$file.sha256")
actual=$(sha256 "$tmp/$file")
[ -n "$expected" ] && [ "$expected" = "$actual" ] || fail "checksum mismatch for $url (published $expected, downloaded $actual); nothing was installed"
mkdir "$tmp/unpacked"
tar -xzf "$tmp/$file" -C "$tmp/unpacked" alien-agent 2>/dev/null || fail "$url holds no alien-agent; nothing was installed"

mkdir -p "$prefix/bin" || fail "cannot create $prefix/bin"
cp "$tmp/unpacked/alien-agent" "$prefix/bin/.alien-agent.new" || fail "cannot write to $prefix/bin"
chmod 755 "$prefix/bin/.alien-agent.new"
mv -f "$prefix/bin/.alien-agent.new" "$prefix/bin/alien-agent" || fail "cannot write $prefix/bin/alien-agent"
rm -rf "$tmp"
trap - EXIT
printf 'installed alien-agent %s (%s) at %s\n' "$version" "$target" "$prefix/bin/alien-agent" >&2

[ "$start" = 1 ] || exit 0
set -- --manager-url "$manager_url" --state-dir "$state_dir"
[ -z "$name" ] || set -- "$@" --name "$name"
ALIEN_AGENT_TOKEN=$token
export ALIEN_AGENT_TOKEN
printf 'starting alien-agent for %s\n' "$manager_url" >&2
exec "$prefix/bin/alien-agent" "$@"
