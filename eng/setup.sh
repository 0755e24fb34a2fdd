#!/usr/bin/env bash
# Idempotent machine preparation for Debian 12/13 (run as root). Each step checks first and
# skips what is already in place, so a second run changes nothing and says so.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
changed=0

# Packages the product needs from the OS: Open MPI (the distributed engine) and the
# Fashion-MNIST data set (real data for tests and samples; nothing is downloaded at run time);
# scikit-learn's bundled CSVs (iris, wine, digits, breast cancer, diabetes) for the ML.NET
# conformance tests; for the emulated cluster and its tests, iproute2 (ip, tc) and python3 (eng/ctrl-c.py).
# mpich and libmpich12 serve the MPI.NET binding (MPICH stands in for Microsoft MPI); Open MPI keeps mpirun (its
# alternative has the higher priority, checked below).
apt_packages=(openmpi-bin libopenmpi-dev mpich libmpich12 dataset-fashion-mnist python3-sklearn iproute2 python3)

libstdcxx_path() {
  local p
  for p in /lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6; do
    [ -e "$p" ] && { echo "$p"; return; }
  done
  ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 /{print $NF; exit}'
}

# TorchSharp 0.107's native glue needs GLIBCXX_3.4.32 (built on Ubuntu 24.04).
needs_libstdcxx() {
  local lib; lib=$(libstdcxx_path)
  [ -n "$lib" ] || return 0
  ! grep -qa 'GLIBCXX_3\.4\.32' "$lib"
}

missing_packages() {
  local p
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

explain_manual() {
  cat <<MSG
setup: this step prepares a Debian 12/13 machine as root. On this machine ($1) install by hand:
  - Open MPI 4.x with its development files (mpirun on PATH, libmpi.so.40 loadable)
  - the Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist/ (or set SIDCO_FASHION_MNIST_DIR)
  - scikit-learn's bundled data CSVs (python3-sklearn; or set SIDCO_SKLEARN_DATA_DIR to a folder holding them)
  - a libstdc++ that provides GLIBCXX_3.4.32 (GCC 13 or newer), needed by TorchSharp 0.107
  - the .NET SDK 10
then run './build.sh build' or './build.sh test' again.
MSG
}

if [ "$(id -u)" -ne 0 ] || ! grep -qi '^ID=debian' /etc/os-release 2>/dev/null || ! command -v apt-get >/dev/null; then
  missing=$(command -v apt-get >/dev/null && missing_packages | tr '\n' ' ' || true)
  if needs_libstdcxx || [ -n "${missing// /}" ] || ! command -v mpirun >/dev/null; then
    why="not root"; [ "$(id -u)" -eq 0 ] && why="not Debian"
    explain_manual "$why"
    [ -n "${missing// /}" ] && echo "setup: missing packages: $missing"
    exit 1
  fi
  say "not root/Debian, but everything needed is present"
else
  missing=$(missing_packages | tr '\n' ' ')
  apt_updated=0
  apt_update() { [ $apt_updated -eq 1 ] || { apt-get update -qq; apt_updated=1; }; }

  if needs_libstdcxx; then
    # Add Debian 13 (trixie) with the same URIs and key as this machine's own Debian entry,
    # pinned low so that only what we ask for explicitly comes from it.
    src=/etc/apt/sources.list.d/sidco-trixie.sources
    if [ ! -f "$src" ]; then
      uris=""; signed=""
      for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # first stanza whose Suites has a plain release name (not -security/-updates)
        read -r uris signed < <(awk 'BEGIN{RS="";FS="\n"} {u="";s="";k="";for(i=1;i<=NF;i++){if($i~/^URIs:/){sub(/^URIs:[ \t]*/,"",$i);u=$i} if($i~/^Suites:/){sub(/^Suites:[ \t]*/,"",$i);s=$i} if($i~/^Signed-By:/){sub(/^Signed-By:[ \t]*/,"",$i);k=$i}} if(s ~ /(^| )(bookworm|trixie|stable)( |$)/ && u!=""){print u, k; exit}}' "$f") || true
        [ -n "$uris" ] && break
      done
      if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
        uris=$(awk '$1=="deb" && $3 ~ /^(bookworm|stable)$/ {for(i=2;i<=NF;i++) if($i ~ /:\/\//){print $i; exit}}' /etc/apt/sources.list)
      fi
      [ -n "$uris" ] || { echo "setup: could not find this machine's Debian apt source to reuse for trixie"; exit 1; }
      [ -n "$signed" ] || signed=/usr/share/keyrings/debian-archive-keyring.gpg
      printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' "$uris" "$signed" > "$src"
      printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/sidco-trixie
      say "added the Debian 13 (trixie) suite, pinned at priority 100"
    fi
    apt_update
    say "installing libstdc++6 from trixie (this also upgrades libc6)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t trixie libstdc++6 >/dev/null
    needs_libstdcxx && { echo "setup: libstdc++ still lacks GLIBCXX_3.4.32"; exit 1; }
    changed=1
  else
    say "libstdc++ already provides GLIBCXX_3.4.32"
  fi

  if [ -n "${missing// /}" ]; then
    apt_update
    say "installing $missing"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    changed=1
  else
    say "${apt_packages[*]} already installed"
  fi
fi

# Installing MPICH must leave mpirun pointing at Open MPI, which the trainer's own binding and the tests use.
if command -v update-alternatives >/dev/null && [ -e /usr/bin/mpirun.openmpi ] \
  && [ "$(readlink -f /usr/bin/mpirun)" != "$(readlink -f /usr/bin/mpirun.openmpi)" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    update-alternatives --set mpirun /usr/bin/mpirun.openmpi >/dev/null
    say "mpirun set back to Open MPI (MPICH's launcher is mpiexec.mpich)"
    changed=1
  else
    echo "setup: mpirun is not Open MPI's; run: update-alternatives --set mpirun /usr/bin/mpirun.openmpi"
  fi
fi

if [ "$changed" -eq 0 ]; then
  say "machine already prepared: nothing changed"
fi
