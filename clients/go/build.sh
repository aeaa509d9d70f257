#!/usr/bin/env bash
# Builds and tests the Go client offline, from Debian's Go packages (GOPATH mode: no
# module proxy needed). Users with the module proxy use plain `go build ./...` instead
# (README.md).
#
#   clients/go/build.sh                 vet, build the package and the example
#                                       (binary: target/go/bin/jetinfer-example)
#   clients/go/build.sh test [ARGS]     go test ARGS (default: -count=1 .)
#   clients/go/build.sh go CMD [ARGS]   any go command in this environment
#
# Environment: GOCODE (default /usr/share/gocode: where Debian's golang-*-dev packages
# put their sources), JETINFER_GO_OUT (default <repo>/target/go: GOPATH and binaries),
# GOCACHE (default <repo>/target/go-cache, so reruns are fast).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
root="$(cd "$here/../.." && pwd -P)"
gocode="${GOCODE:-/usr/share/gocode}"
out="${JETINFER_GO_OUT:-$root/target/go}"
module=github.com/jetinfer/jetinfer

command -v go >/dev/null || { echo "build.sh: no 'go' on PATH (Debian: apt-get install golang-go)" >&2; exit 1; }
# Debian package of each import path the client needs.
for dep in github.com/nats-io/nats.go:golang-github-nats-io-go-nats-dev \
           github.com/vmihailenco/msgpack/v5:golang-github-vmihailenco-msgpack.v5-dev \
           github.com/gomodule/redigo/redis:golang-github-gomodule-redigo-dev \
           lukechampine.com/blake3:golang-lukechampine-blake3-dev; do
    if [ ! -d "$gocode/src/${dep%%:*}" ]; then
        echo "build.sh: ${dep%%:*} is missing under $gocode/src (apt-get install ${dep##*:})" >&2
        exit 1
    fi
done

# The repository appears in a private GOPATH under its import path; the symlink is to
# the repository root so that relative paths (../../docs) read the same either way.
mkdir -p "$out/gopath/src/${module%/*}" "$out/bin"
link="$out/gopath/src/$module"
[ "$(readlink "$link" 2>/dev/null)" = "$root" ] || ln -sfn "$root" "$link"

export GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local
export GOPATH="$out/gopath:$gocode"
export GOCACHE="${GOCACHE:-$root/target/go-cache}"
cd "$link/clients/go"

case "${1:-build}" in
    build)
        go vet ./...
        go build ./...
        go build -o "$out/bin/jetinfer-example" ./cmd/jetinfer-example
        echo "build.sh: built $out/bin/jetinfer-example"
        ;;
    test)
        shift
        if [ $# -eq 0 ]; then set -- -count=1 .; fi
        go test "$@"
        ;;
    go)
        shift
        go "$@"
        ;;
    *)
        echo "usage: $0 [build | test [ARGS] | go CMD [ARGS]]" >&2
        exit 2
        ;;
esac
