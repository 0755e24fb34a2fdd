#!/usr/bin/env bash
# rsh stand-in for mpirun's launcher: "netns-rsh.sh [-options] HOST command..." runs the command in
# the network namespace that plays HOST, so every emulated host gets its own orted, as with ssh.
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
ns=$(awk -v h="$host" '$1 == h { print $2 }' "${SIDCO_NETNS_MAP:?}")
[ -n "$ns" ] || { echo "netns-rsh: unknown host $host" >&2; exit 1; }
exec ip netns exec "$ns" sh -c "$*"
