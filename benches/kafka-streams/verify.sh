#!/usr/bin/env bash
# Checks and measures the Kafka Streams reference peer on a real broker:
# starts a broker (tests/kafka/kafka.sh) in a temporary directory, writes
# SENTENCES input records to a 1-partition topic, runs the word count once per
# guarantee x commit interval (fresh application id, output topic and state dir
# each run), checks every run's output with a read_committed reader (Verify),
# and prints records/s. The broker is stopped at the end, also on failure.
#
#   bash benches/kafka-streams/verify.sh [SENTENCES (default 20000)] [INTERVALS (default "1000 100")]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sentences=${1:-20000}
intervals=${2:-1000 100}
cp=$(bash "$root/scripts/build-kafka-streams")
dir=$(mktemp -d)
trap 'bash "$root/tests/kafka/kafka.sh" stop "$dir/kafka" || true; rm -rf "$dir"' EXIT
bootstrap=$(KAFKA_JIT_FULL=${KAFKA_JIT_FULL:-1} bash "$root/tests/kafka/kafka.sh" start "$dir/kafka")
echo "broker at $bootstrap"
input=wc-in-$sentences
java -cp "$cp" dev.wasmstream.bench.Produce --bootstrap "$bootstrap" --topic "$input" --count "$sentences"
for interval in $intervals; do
  for guarantee in at_least_once exactly_once_v2; do
    id=wc-$guarantee-$interval-$(date +%s%N)
    line=$(java -cp "$cp" dev.wasmstream.bench.WordCount --bootstrap "$bootstrap" --input "$input" --output "$id-out" \
      --application-id "$id" --state-dir "$dir/state" --commit-interval-ms "$interval" --guarantee "$guarantee" \
      --expect-records "$sentences" --create-topics | tail -n 1)
    java -cp "$cp" dev.wasmstream.bench.Verify --bootstrap "$bootstrap" --input "$input" --output "$id-out" >/dev/null
    secs=$(echo "$line" | sed -n 's/^processed [0-9]* records in \([0-9.]*\) s$/\1/p')
    [ -n "$secs" ] || { echo "verify.sh: unexpected WordCount output: $line" >&2; exit 1; }
    printf '%-16s commit.interval.ms=%-5s %s -> %.0f records/s (output verified)\n' \
      "$guarantee" "$interval" "$line" "$(awk -v n="$sentences" -v s="$secs" 'BEGIN { print n / s }')"
  done
done
