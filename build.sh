#!/usr/bin/env bash
# One entry point for users and CI. Each verb does what it needs first, and nothing twice:
#   ./build.sh setup      prepare the machine (idempotent) and restore packages
#   ./build.sh build      setup + Release build of the whole solution
#   ./build.sh test       build + run every test project, print "N passed, N failed, N skipped" (--fast: unit tests only)
#   ./build.sh sample     build + train the Fashion-MNIST main job (pass --mpi N for mpirun)
#   ./build.sh bench ...  build + run a benchmark: compression | allreduce | training | cluster
#   ./build.sh pack       build + produce the NuGet package under artifacts/packages
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
config=${CONFIGURATION:-Release}
artifacts=$root/artifacts
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
# Open MPI refuses root without these, and its shared-memory single-copy path fails in containers.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}

done_setup=0
done_build=0

setup() {
  [ $done_setup -eq 1 ] && return
  command -v dotnet >/dev/null || { echo "build.sh: the .NET SDK 10 is required (dotnet on PATH)"; exit 1; }
  bash eng/setup.sh
  echo "setup: restoring NuGet packages"
  dotnet restore SIDCo.ML.sln --verbosity quiet
  done_setup=1
}

build() {
  [ $done_build -eq 1 ] && return
  setup
  echo "build: dotnet build SIDCo.ML.sln -c $config"
  dotnet build SIDCo.ML.sln -c "$config" --no-restore --nologo --verbosity quiet -clp:NoSummary -p:WarningLevel=4
  done_build=1
}

run_tests() {
  build
  local status=0 proj fast=0
  # --fast: the unit tests only (the inner loop, under a minute); CI runs every category.
  if [ "${1:-}" = "--fast" ]; then fast=1; shift; set -- --filter "Category=unit" "$@"; fi
  # The full run also checks the formatting that .editorconfig sets (the 140-character limit is a unit test).
  if [ "$fast" = 0 ]; then
    echo "format: dotnet format --verify-no-changes"
    dotnet format SIDCo.ML.sln --verify-no-changes --no-restore \
      || { echo "format: files above differ from .editorconfig; 'dotnet format SIDCo.ML.sln' fixes them"; status=1; }
  fi
  local results=$artifacts/TestResults
  rm -rf "$results"; mkdir -p "$results"
  for proj in test/*/*.csproj; do
    grep -q '<IsTestProject>true</IsTestProject>' "$proj" || continue
    local name; name=$(basename "$proj" .csproj)
    echo "test: $name"
    dotnet test "$proj" -c "$config" --no-build --nologo \
      --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=normal" \
      --results-directory "$results" "$@" || status=1
  done
  bash eng/test-totals.sh "$results" || status=1
  return $status
}

sample() {
  build
  local mpi=0 args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --mpi) mpi=$2; shift 2;;
      --mpi=*) mpi=${1#--mpi=}; shift;;
      *) args+=("$1"); shift;;
    esac
  done
  local dll=src/Samples/FashionMnist/bin/$config/net10.0/FashionMnist.dll
  mkdir -p "$artifacts/sample"
  local report=()
  printf '%s\n' "${args[@]:-}" | grep -q -- '--report' || report=(--report "$artifacts/sample/report.json")
  if [ "$mpi" -gt 0 ]; then
    mpirun -np "$mpi" --oversubscribe --bind-to none dotnet "$dll" "${report[@]}" "${args[@]}"
  else
    dotnet "$dll" "${report[@]}" "${args[@]}"
  fi
}

bench() {
  build
  local kind=${1:-}
  [ -n "$kind" ] || { echo "usage: ./build.sh bench compression|kernels|allreduce|training|scoring|defaults|cluster [options]"; exit 2; }
  shift
  local dll=test/Microsoft.ML.SIDCo.Benchmarks/bin/$config/net10.0/Microsoft.ML.SIDCo.Benchmarks.dll
  mkdir -p "$artifacts/bench"
  case "$kind" in
    cluster) bash eng/cluster-bench.sh "$dll" "$@";;
    *) dotnet "$dll" "$kind" "$@";;
  esac
}

pack() {
  build
  rm -rf "$artifacts/packages"
  dotnet pack src/Microsoft.ML.SIDCo/Microsoft.ML.SIDCo.csproj -c "$config" --no-build --nologo \
    --verbosity quiet -o "$artifacts/packages"
  ls -1 "$artifacts/packages"
}

verb=${1:-}
[ $# -gt 0 ] && shift
case "$verb" in
  setup) setup;;
  build) build;;
  test) run_tests "$@";;
  sample) sample "$@";;
  bench) bench "$@";;
  pack) pack;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2;;
esac
