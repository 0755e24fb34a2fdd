#!/usr/bin/env bash
# rsh stand-in for mpirun's launcher: "netns-rsh.sh [-options] HOST command..." runs the command in
# the network namespace that plays HOST, so every emulated host gets its own orted, as with ssh.
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
ns=$(awk -v h="$host" '$1 == h { print $2 }' "${SIDCO_NETNS_MAP:?}")
[ -n "$ns" ] || { echo "netns-rsh: unknown host $host" >&2; exit 1; }
cmd="$*"
# The emulated hosts share one hostname and one /tmp, so orteds started together would race to create
# the same session directory (ompi.<hostname>.<uid>/jf.<job>) and some would fail. Each host gets
# its own directory below the base mpirun was given.
# mpirun may quote the value ("/tmp/..."): the quotes are not part of the path (taken literally, mkdir
# made a directory named '"' in the working directory).
base=$(printf '%s\n' "$cmd" | sed -n 's/.*orte_tmpdir_base "\{0,1\}\([^ "]*\)"\{0,1\}.*/\1/p')
if [ -n "$base" ]; then
  mkdir -p "$base/$ns"
  cmd=$(printf '%s' "$cmd" | sed "s|orte_tmpdir_base \"\{0,1\}$base\"\{0,1\}|orte_tmpdir_base $base/$ns|")
fi
exec ip netns exec "$ns" sh -c "$cmd"
