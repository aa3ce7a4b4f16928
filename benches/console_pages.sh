#!/usr/bin/env bash
# The web console's page latency on a node that holds a 1,000,000-row conversion (1,000 STIX
# files, 2,000,000 TAXII objects): 30 requests per page, p50/p95/max, in RUNS rounds.
#
#   cargo bench --bench convert   # once, with BENCH_FORMATS=csv: makes target/bench-data/sdn_1000000.csv
#   cargo build --release
#   bash benches/console_pages.sh [BIN] [RUNS]
#
# Needs curl and jq. Prints how long the TAXII publisher took to catch up after the conversion.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/br-cti}
RUNS=${2:-3}
DATA=target/bench-data/sdn_1000000.csv
[ -f "$DATA" ] || { echo "missing $DATA: run BENCH_FORMATS=csv cargo bench --bench convert once" >&2; exit 1; }
DIR=$(mktemp -d)
PORT=18091
"$BIN" serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT > "$DIR/node.log" 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null; rm -rf "$DIR"' EXIT
U=http://127.0.0.1:$PORT
until curl -sf $U/healthz > /dev/null; do sleep 0.2; done
FH=$(curl -sf -F file=@$DATA -F task_id=bench $U/data/upload_file | jq -r .data.file_hash)
curl -sf -d "{\"file_hash\":\"$FH\",\"stix_compress\":1000}" $U/data/process_data_to_stix > /dev/null
until curl -sf -d "{\"file_hash\":\"$FH\"}" $U/data/get_stix_process_progress | jq -e '.data.progress == 100' > /dev/null; do
    sleep 1
done
start=$(date +%s)
until curl -sf -H 'Accept: text/html' $U/ | grep -q 'id="lag-files">0<'; do sleep 2; done
echo "TAXII publisher caught up $(( $(date +%s) - start )) s after the conversion"
SH=$(curl -sf -d "{\"file_hash\":\"$FH\",\"page\":1,\"page_size\":1}" $U/data/get_local_stix_records \
    | jq -r '.data[0].stix_file_hash')
for run in $(seq "$RUNS"); do
    echo "run $run"
    for p in / /console/datasets /console/datasets/$FH /console/stix/$FH/$SH \
        "/console/stix/$FH/$SH?page=20" /console/taxii /console/hidden-dangers /console/users; do
        for i in $(seq 30); do
            curl -sf -o /dev/null -H 'Accept: text/html' -w '%{time_total}\n' "$U$p"
        done | sort -n | awk -v p="${p//$FH/FILE}" '{a[NR]=$1*1000} END {
            printf "  %-34s p50 %6.1f ms  p95 %6.1f ms  max %6.1f ms\n",
                substr(p, 1, 34), a[int(NR/2)+1], a[int(NR*0.95)], a[NR] }'
    done
done
grep VmHWM /proc/$NODE/status
