#!/usr/bin/env bash
# Emulated cluster for the training benchmark: each "host" is a network namespace with its own
# address, all joined by a bridge, every link rate-limited with tc; real mpirun starts one rank per
# host through an rsh stand-in, so ranks talk TCP over the limited links. Everything is torn down on
# exit, on failure and on Ctrl-C.
#   ./build.sh bench cluster [--hosts 2,4] [--link 100mbit,1gbit] [--model wide-mlp] [--compressors ...]
#                            [--densities ...] [--steps N | --epochs N] [--dense-steps N] [--workers-per-host W]
#                            [--density-warmup STEPS] [--no-momentum-correction] [--selection-cap C]
#                            [--interleave BLOCK] [--run-timeout SECONDS] [--json FILE] [--launch-check N]
#                            [--eval-every N [--target-accuracy A]] [--wire fp32,fp16,bf16]
#                            [--peers pytorch [--peer-hooks none,fp16,powersgd-r1,powersgd-r4]] [--dense-overlap on|off|both] [--bucket-mb MB]
#                            [--tcp quickack,cubic|bbr|reno,rps] [--exchange-trials N [--exchange-load-ms L] [--exchange-shapes S]]
# The defaults are the recipe docs/benchmarks.md reports: the 5.8M-parameter MLP, 400 steps (timed over the
# last 200), momentum correction, and the sparse compressors of a density trained side by side in one job,
# taking turns every 25 steps (each a training of its own, resumed from its checkpoint), so that their step
# times pair up turn by turn instead of comparing runs made minutes apart. `none` runs alone for
# --dense-steps (20) steps: a dense step at 100 Mbit/s takes seconds and its time does not drift.
# --interleave 0 runs every compressor alone; with --epochs, or --workers-per-host W > 1 (every run then made
# twice: flat and hierarchical exchange), runs are separate unless --interleave is given.
# --launch-check N builds the hosts and starts a job that only runs `true` N times with the same
# launch settings as the training runs, reports how many launches failed, and trains nothing.
# --eval-every N measures time to accuracy: every compressor (none too) trains alone for --steps, its test accuracy taken
# every N steps, and the table gives the training time until it first reaches --target-accuracy (0.8). --wire lists the
# values' formats on the wire (each run once per format); a compressor powersgd-rR runs PowerSgdHook at rank R.
# --peers pytorch also trains the same model and recipe with PyTorch DDP (eng/ddp-peer.py, Debian's python3-torch, gloo)
# on the same hosts and links, one process per host, once per DDP communication hook in --peer-hooks (none and fp16 for
# --dense-steps steps, as our `none`; PowerSGD for --steps). --dense-overlap both runs `none` with the exchange overlapped with backward and without.
# Every run's TCP counters (retransmitted segments, loss probes, timeouts, delayed ACKs) and tbf drops, per host, go to
# JSON.tcp.tsv (every counter that moved in JSON.nstat.*). --tcp changes the hosts' TCP from this machine's settings:
# quickack acknowledges every segment at once (a route option) instead of delaying ACKs up to 40 ms; cubic, bbr or reno
# picks the congestion control (a route option; by default the hosts use this machine's); rps steers each flow's packets
# to one CPU's input queue, so that the veth links do not reorder them. They are there to find out where a step's time
# goes, not to tune a result. --exchange-trials N trains nothing: it times the dense exchange of the model's gradient alone,
# N times in each of the shapes training gives it (one piece, the overlap's buckets, on a thread of their own, with
# --exchange-load-ms of CPU work beside them) and its parts (each half alone, Open MPI's allgather beside our ring, Open
# MPI's allreduce), to JSON and a table (cluster-exchange in the benchmarks). --exchange-shapes allgather-sweep times
# instead our allgather ring against Open MPI's allgather for blocks of 4 KiB to 4 MiB a rank (the ring's threshold).
set -euo pipefail
dll=${1:?benchmark dll}; shift
hosts_list=4; links=100mbit,1gbit; model=wide-mlp; compressors=none,topk,dgc,sidco-e,sidco-gp,sidco-p
densities=0.01,0.001; steps=400; dense_steps=20; json=artifacts/bench/cluster.json; epochs=""; per_host=1; warmup=0
recipe=--momentum-correction; cap=; launch_check=0; interleave=auto; eval_every=0; target=0.8; wire=fp32; peers=""; peer_hooks=none,fp16,powersgd-r1,powersgd-r4; dense_overlap=on; bucket_mb=25
tcp=""; exchange_trials=0; exchange_load=10; exchange_shapes=training
run_timeout=1200 # seconds: a run that hangs (a rank stuck on a lost connection) is stopped and counted as failed
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts_list=$2; shift 2;;
    --link) links=$2; shift 2;;
    --model) model=$2; shift 2;;
    --compressors) compressors=$2; shift 2;;
    --densities) densities=$2; shift 2;;
    --steps) steps=$2; shift 2;;
    --dense-steps) dense_steps=$2; shift 2;;
    --epochs) epochs=$2; shift 2;;
    --json) json=$2; shift 2;;
    --workers-per-host) per_host=$2; shift 2;;
    --density-warmup) warmup=$2; shift 2;;
    --run-timeout) run_timeout=$2; shift 2;;
    --momentum-correction) recipe="--momentum-correction"; shift;;
    --no-momentum-correction) recipe=""; shift;;
    --selection-cap) cap="--selection-cap $2"; shift 2;;
    --launch-check) launch_check=$2; shift 2;;
    --interleave) interleave=$2; shift 2;;
    --eval-every) eval_every=$2; shift 2;;
    --target-accuracy) target=$2; shift 2;;
    --wire) wire=$2; shift 2;;
    --peers) peers=$2; shift 2;;
    --peer-hooks) peer_hooks=$2; shift 2;;
    --dense-overlap) dense_overlap=$2; shift 2;;
    --bucket-mb) bucket_mb=$2; shift 2;;
    --tcp) tcp=$2; shift 2;;
    --exchange-trials) exchange_trials=$2; shift 2;;
    --exchange-load-ms) exchange_load=$2; shift 2;;
    --exchange-shapes) exchange_shapes=$2; shift 2;;
    *) echo "cluster: unknown option $1"; exit 2;;
  esac
done

for t in $(echo "$tcp" | tr ',' ' '); do
  case "$t" in quickack|cubic|bbr|reno|rps) ;; *) echo "cluster: --tcp takes quickack, cubic, bbr, reno and rps, not $t"; exit 2;; esac
done
case "$exchange_shapes" in training|allgather-sweep) ;;
  *) echo "cluster: --exchange-shapes takes training or allgather-sweep, not $exchange_shapes"; exit 2;; esac

# Which jobs to run: `none` alone; the sparse compressors one job each, or all in one interleaved job.
sparse=$(echo "$compressors" | tr "," "\n" | { grep -vx none || true; } | paste -sd, -)
if [ "$eval_every" -gt 0 ]; then interleave=0; dense_steps=$steps; fi
if [ "$interleave" = auto ]; then
  interleave=0
  if [ -z "$epochs" ] && [ "$per_host" -eq 1 ] && [ "$(echo "$sparse" | tr ',' '\n' | grep -c .)" -ge 2 ]; then
    # Turns of 25 steps where they divide an epoch (half the steps), else the largest divisor of it below.
    half=$(( (steps + 1) / 2 )); interleave=25; while [ $((half % interleave)) -ne 0 ]; do interleave=$((interleave - 1)); done
  fi
fi
units=()
case ",$compressors," in *,none,*) units+=(none);; esac
if [ "$interleave" -gt 0 ] && [ -n "$sparse" ]; then units+=("$sparse")
else for c in $(echo "$sparse" | tr ',' ' '); do units+=("$c"); done; fi

if [ "$(id -u)" -ne 0 ]; then echo "cluster: needs root (it creates network namespaces, veth links, a bridge and tc qdiscs). Run as root."; exit 1; fi
if [ "$peers" = pytorch ] && ! /usr/bin/python3 -c "import torch.distributed" 2>/dev/null; then
  echo "cluster: --peers pytorch needs Debian's python3-torch (apt-get install python3-torch)"; exit 1
fi
for tool in ip tc mpirun; do
  command -v $tool >/dev/null || { echo "cluster: '$tool' not found: install iproute2 (ip, tc) and openmpi-bin"; exit 1; }
done
ip netns add sidco-probe 2>/dev/null && ip netns del sidco-probe || { echo "cluster: 'ip netns' does not work here (needs CAP_SYS_ADMIN and network namespaces)"; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
export SIDCO_NETNS_MAP=$work/hosts.map
max_hosts=$(echo "$hosts_list" | tr ',' '\n' | sort -n | tail -1)

net_down() {
  for i in $(seq 0 $((max_hosts - 1))); do ip netns del "sidco-h$i" 2>/dev/null || true; ip link del "sidco-v$i" 2>/dev/null || true; done
  ip link del sidco-br0 2>/dev/null || true
}
# Ranks and orteds of an interrupted run can outlive mpirun by a few seconds (a namespace's deletion
# does not end its processes): wait for them, then end the stragglers.
stop_job() {
  local pattern="$root/$dll cluster-worker|orte_tmpdir_base $work/"
  for _ in $(seq 1 30); do pgrep -f "$pattern" >/dev/null || return 0; sleep 0.5; done
  pkill -KILL -f "$pattern" || true
}
trap 'stop_job; net_down; rm -rf "$work"' EXIT
trap 'echo "cluster: interrupted, tearing down"; exit 130' INT TERM
net_down

# rate: tc syntax (100mbit, 1gbit); burst: what tbf lets through at once after an idle spell.
make_cluster() {
  local n=$1 rate=$2 burst=$3
  ip link add sidco-br0 type bridge
  ip link set sidco-br0 up
  : > "$SIDCO_NETNS_MAP"
  for i in $(seq 0 $((n - 1))); do
    local ns=sidco-h$i addr=10.200.0.$((i + 1))
    ip netns add $ns
    ip link add sidco-v$i type veth peer name eth0 netns $ns
    ip link set sidco-v$i master sidco-br0 up
    ip -n $ns addr add $addr/24 dev eth0
    ip -n $ns link set eth0 up
    ip -n $ns link set lo up
    # Both directions of every host's link are limited: egress in the namespace, ingress at the bridge port.
    ip netns exec $ns tc qdisc add dev eth0 root tbf rate $rate burst $burst latency 50ms
    tc qdisc add dev sidco-v$i root tbf rate $rate burst $burst latency 50ms
    # --tcp (validated above): route options, or every CPU in the veth ends' flow steering.
    local route="" cpus; cpus=$(printf %x $(( (1 << $(nproc)) - 1 )))
    for t in $(echo "$tcp" | tr ',' ' '); do
      case "$t" in
        quickack) route="$route quickack 1";;
        cubic|bbr|reno) route="$route congctl $t";;
        rps) ip netns exec $ns sh -c "echo $cpus > /sys/class/net/eth0/queues/rx-0/rps_cpus"
             echo "$cpus" > /sys/class/net/sidco-v$i/queues/rx-0/rps_cpus;;
      esac
    done
    # shellcheck disable=SC2086 # route options are words
    [ -z "$route" ] || ip -n $ns route replace 10.200.0.0/24 dev eth0 proto kernel scope link src $addr $route
    echo "$addr $ns" >> "$SIDCO_NETNS_MAP"
  done
}

# TCP counters and packet drops of every host: tcp_mark before a run, tcp_report after it appends the differences. Drops
# are counted where a packet can be lost on the way: the tbf qdiscs (out of the host, into it), the veth ends, and the
# kernel's per-CPU input backlog (softnet, shared by all hosts, so every host's row repeats it).
tcp_counters="TcpRetransSegs TcpExtTCPFastRetrans TcpExtTCPLossProbes TcpExtTCPTimeouts TcpExtTCPDSACKRecv TcpExtDelayedACKs"
drop_counts() { # host index: tbf drops out and in, veth drops (both ends), softnet drops
  local i=$1 ns=sidco-h$1
  qdisc() { sed -n 's/.*(dropped \([0-9]*\),.*/\1/p' | head -1; }
  echo "$(ip netns exec "$ns" tc -s qdisc show dev eth0 | qdisc)" "$(tc -s qdisc show dev "sidco-v$i" | qdisc)" \
    "$(( $(ip netns exec "$ns" cat /sys/class/net/eth0/statistics/{rx,tx}_dropped | paste -sd+) \
       + $(cat /sys/class/net/sidco-v"$i"/statistics/{rx,tx}_dropped | paste -sd+) ))" \
    "$(s=0; while read -r _ d _; do s=$((s + 16#$d)); done < /proc/net/softnet_stat; echo $s)"
}
tcp_mark() {
  for i in $(seq 0 $(($1 - 1))); do
    ip netns exec "sidco-h$i" env NSTAT_HISTORY="$work/nstat-$i" nstat -n
    drop_counts "$i" > "$work/drops-$i"
  done
}
tcp_report() { # hosts, link, run label
  local tsv=$json.tcp.tsv
  [ -s "$tsv" ] || { printf 'run\tlink\ttcp\thost'; printf '\t%s' $tcp_counters "tbf drops out" "tbf drops in" "veth drops" \
    "softnet drops"; echo; } > "$tsv"
  for i in $(seq 0 $(($1 - 1))); do
    local counts
    # Every counter that moved goes to a file of its own; the table takes the ones above.
    ip netns exec "sidco-h$i" env NSTAT_HISTORY="$work/nstat-$i" nstat -s > "$json.nstat.$(echo "$3" | tr ' ' '-').h$i.txt"
    # shellcheck disable=SC2086 # the counter names are words
    counts=$(ip netns exec "sidco-h$i" env NSTAT_HISTORY="$work/nstat-$i" nstat -z $tcp_counters \
      | awk 'NR > 1 { v[$1] = $2 } END { n = split("'"$tcp_counters"'", k, " "); for (j = 1; j <= n; j++) printf "%s\t", v[k[j]] + 0 }')
    read -r -a before < "$work/drops-$i"; read -r -a after <<< "$(drop_counts "$i")"
    local delta; delta=$(for j in 0 1 2 3; do printf '\t%s' $((after[j] - before[j])); done)
    echo -e "$3\t$2\t${tcp:-default}\th$i\t${counts%$'\t'}$delta" >> "$tsv"
  done
}

mkdir -p "$(dirname "$json")"
rows=$json.rows.jsonl; [ "$launch_check" -gt 0 ] || { : > "$rows"; : > "$json.tcp.tsv"; }
for n in $(echo "$hosts_list" | tr ',' ' '); do
  for link in $(echo "$links" | tr ',' ' '); do
    case "$link" in
      *gbit) mbps=$(( ${link%gbit} * 1000 ));;
      *mbit) mbps=${link%mbit};;
      *) echo "cluster: link rate must look like 100mbit or 1gbit"; exit 2;;
    esac
    # A real link never sends faster than its rate, but tbf passes a full bucket at once: with a bucket of 1 MB,
    # a sparse exchange of ~140 KB at 100 Mbit/s passed in 2-6 ms instead of the ~10 ms its bytes take on the
    # wire. The bucket is therefore 4 ms of link time (rate / 250), the least tbf needs at the kernel's HZ of 250.
    burst=$(( mbps * 1000 / 8 / 250 ))kb
    net_down
    make_cluster "$n" "$link" "$burst"
    hostlist=$(awk '{ printf "%s%s:1", (NR > 1 ? "," : ""), $1 }' "$SIDCO_NETNS_MAP")
    # Every emulated host is a machine of its own to Open MPI, so each rank would take all of this
    # machine's cores for TorchSharp; they share them, so each gets its share (the trainer honours
    # OMP_NUM_THREADS). Without it 4 ranks ran 8 threads on 2 cores and compute took ~4x longer.
    threads=$(( $(nproc) / (n * per_host) )); [ "$threads" -ge 1 ] || threads=1
    # mpirun in the first host, one rank per host, every orted started in its host by the rsh stand-in,
    # TCP only and only over the emulated links. A run adds its own session directory and program.
    launch=(ip netns exec sidco-h0 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS="$threads"
      mpirun -np "$n" --host "$hostlist" --oversubscribe --bind-to none
      --mca plm_rsh_agent "$root/eng/netns-rsh.sh" --mca btl tcp,self
      --mca btl_tcp_if_include 10.200.0.0/24 --mca oob_tcp_if_include 10.200.0.0/24
      -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM -x OMPI_MCA_mpi_yield_when_idle=1 -x OMP_NUM_THREADS -x DOTNET_CLI_TELEMETRY_OPTOUT=1 -x PATH -x HOME)
    if [ "$launch_check" -gt 0 ]; then
      failed=0
      for k in $(seq 1 "$launch_check"); do
        session=$(mktemp -d "$work/session.XXXXXX")
        timeout --foreground --kill-after=10 60 "${launch[@]}" --mca orte_tmpdir_base "$session" true > "$work/run.log" 2>&1 \
          || { failed=$((failed + 1)); cp "$work/run.log" "$json.launch-failed-$n-$mbps-$k.log"; }
      done
      echo "cluster: launch check on $n hosts at $link: $failed of $launch_check launches failed"
      [ "$failed" -eq 0 ] || launch_failures=1
      net_down
      continue
    fi
    echo "cluster: $n hosts at $link ($hostlist)"
    if [ "$exchange_trials" -gt 0 ]; then
      echo "  the dense exchange alone, $exchange_trials trials of each shape"
      session=$(mktemp -d "$work/session.XXXXXX")
      tcp_mark "$n"
      timeout --foreground --kill-after=30 "$run_timeout" "${launch[@]}" --mca orte_tmpdir_base "$session" \
        dotnet "$root/$dll" cluster-exchange --model "$model" --trials "$exchange_trials" --load-ms "$exchange_load" \
        --shapes "$exchange_shapes" --bucket-mb "$bucket_mb" --link-mbps "$mbps" > "$work/run.log" 2>&1 \
        || { cp "$work/run.log" "$json.failed-exchange-$mbps.log"; echo "  run failed, log in $json.failed-exchange-$mbps.log"; }
      sed -n 's/.*RESULT //p' "$work/run.log" >> "$rows"
      tcp_report "$n" "$link" "exchange"
      net_down
      continue
    fi
    for c in "${units[@]}"; do
      run_steps=$steps run_interleave=$interleave; [ "$c" = none ] && run_steps=$dense_steps run_interleave=0
      for d in $(echo "$densities" | tr ',' ' '); do
        [ "$c" = none ] && [ "$d" != "${densities%%,*}" ] && continue
        layouts=flat; [ "$per_host" -gt 1 ] && [ "$c" != none ] && layouts="flat hierarchical"
        if [ "$c" = none ]; then
          case "$dense_overlap" in on) layouts=flat;; off) layouts=no-overlap;; both) layouts="flat no-overlap";; esac
        fi
        for layout in $layouts; do
        for w in $(echo "$wire" | tr ',' ' '); do
        echo "  $c at $d ($layout, $per_host worker(s) per host, $w on the wire)"
        extra=""; [ "$layout" = hierarchical ] && extra="--hierarchical"; [ "$layout" = no-overlap ] && extra="--no-overlap"
        # All emulated hosts share one hostname and /tmp: a fresh session directory per run keeps its
        # orteds from colliding with an earlier run's session files (and netns-rsh.sh gives each host
        # its own directory below it). Up to two retries, for a run that fails for a reason outside it.
        for attempt in 1 2 3; do
          session=$(mktemp -d "$work/session.XXXXXX")
          tcp_mark "$n"
          if ! timeout --foreground --kill-after=30 "$run_timeout" "${launch[@]}" --mca orte_tmpdir_base "$session" \
            dotnet "$root/$dll" cluster-worker --compressors "$c" --interleave "$run_interleave" --checkpoints "$session/checkpoints" --density "$d" --steps "$run_steps" --model "$model" --link-mbps "$mbps" --hosts "$n" ${epochs:+--epochs $epochs} --workers-per-host "$per_host" --density-warmup "$warmup" $recipe $cap $extra --wire "$w" --bucket-mb "$bucket_mb" \
            $( [ "$eval_every" -gt 0 ] && echo "--eval-every $eval_every --target-accuracy $target" ) \
            > "$work/run.log" 2>&1; then
            # The whole log is kept beside the JSON: a retry overwrites run.log, and the excerpt rarely says why.
            failed_log="$json.failed-$c-$d-$layout-$mbps-$attempt.log"
            cp "$work/run.log" "$failed_log"
            echo "  run failed: $c at $d ($layout), log in $failed_log:"
            { grep -m 3 -E "Exception|error" "$work/run.log" || true; tail -3 "$work/run.log"; } | cut -c1-300 | sed 's/^/    /'
          fi
          grep -q RESULT "$work/run.log" && break
          [ "$attempt" -lt 3 ] && echo "  retrying"
        done
        sed -n 's/.*RESULT //p' "$work/run.log" >> "$rows"
        tcp_report "$n" "$link" "$c $d $layout $w"
        done
        done
      done
    done
    if [ "$peers" = pytorch ]; then
      for hook in $(echo "$peer_hooks" | tr ',' ' '); do
        echo "  pytorch ddp, hook $hook"
        pids=()
        tcp_mark "$n"
        for i in $(seq 0 $((n - 1))); do
          timeout --kill-after=30 "$run_timeout" ip netns exec "sidco-h$i" env OMP_NUM_THREADS="$threads" GLOO_SOCKET_IFNAME=eth0 \
            /usr/bin/python3 "$root/eng/ddp-peer.py" --rank "$i" --world "$n" --master 10.200.0.1 --model "$model" --hook "$hook" \
            --steps "$([ "${hook#powersgd}" = "$hook" ] && echo "$dense_steps" || echo "$steps")" --link-mbps "$mbps" \
            --bucket-mb "$bucket_mb" $( [ "$eval_every" -gt 0 ] && echo "--eval-every $eval_every --target-accuracy $target" ) \
            > "$work/ddp-$i.log" 2>&1 &
          pids+=($!)
        done
        ok=1; for pid in "${pids[@]}"; do wait "$pid" || ok=0; done
        tcp_report "$n" "$link" "ddp $hook"
        if [ "$ok" -eq 1 ]; then sed -n 's/.*RESULT //p' "$work/ddp-0.log" >> "$rows"
        else cp "$work/ddp-0.log" "$json.failed-ddp-$hook-$mbps.log"; echo "  ddp run failed, log in $json.failed-ddp-$hook-$mbps.log"; fi
      done
    fi
    net_down
  done
done
if [ "$launch_check" -gt 0 ]; then exit "${launch_failures:-0}"; fi
if [ "$exchange_trials" -gt 0 ]; then dotnet "$root/$dll" cluster-exchange-report --rows "$rows" --json "$json"; exit; fi
dotnet "$root/$dll" cluster-report --rows "$rows" --json "$json"
