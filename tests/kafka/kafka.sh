#!/usr/bin/env bash
# A real, single-node Apache Kafka broker (KRaft, no ZooKeeper) on 127.0.0.1 for
# tests, the benchmark and the README's test command.
#
#   kafka.sh fetch            download the broker jars from Maven Central (cached)
#   kafka.sh start DIR        format DIR with a fresh cluster id, start a broker on a
#                             free port, wait until it answers, print its address
#                             (host:port) on stdout; the pid goes to DIR/kafka.pid
#   kafka.sh stop DIR         stop the broker started in DIR
#
# The jars are cached in ${WASMSTREAM_CACHE:-~/.cache/wasmstream}/kafka-<version>,
# outside the clone. Every failure exits non-zero with a sentence saying what failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
cache=${WASMSTREAM_CACHE:-$HOME/.cache/wasmstream}/kafka-$version
libs=$cache/libs

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: Maven is needed to fetch Kafka $version from Maven Central"
  command -v java >/dev/null || die "java not found: a JDK 17+ is needed to run the Kafka broker"
  echo "kafka.sh: fetching Apache Kafka $version jars from Maven Central into $libs" >&2
  rm -rf "$libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$libs" >&2 \
    || die "mvn could not fetch org.apache.kafka:kafka_2.13:$version (see the Maven output above)"
  touch "$libs/.complete"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local dir=${1:?usage: kafka.sh start DIR}
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -rf "$dir/data"
  local port cport id
  port=$(free_port); cport=$(free_port)
  while [ "$cport" = "$port" ]; do cport=$(free_port); done
  id=$(python3 -c 'import uuid,base64; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
log.flush.interval.messages=9223372036854775807
# Deleted topics' files go after 1 s, not 60 (the benchmark deletes each row's).
file.delete.delay.ms=1000
PROPS
  local java_opts=(-Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
                   "-Dlog4j2.configurationFile=$here/log4j2.properties")
  # Tests: a C1-only JIT starts the broker faster. The benchmark sets
  # KAFKA_JIT_FULL=1 to measure against a fully optimised broker.
  if [ "${KAFKA_JIT_FULL:-0}" != 1 ]; then java_opts+=(-XX:TieredStopAtLevel=1); fi
  java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format "--cluster-id=$id" --config "$dir/server.properties" \
    > "$dir/format.log" 2>&1 || die "formatting $dir/data failed: $(tail -n 5 "$dir/format.log")"
  nohup java "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties" > "$dir/broker.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/kafka.pid"
  echo "127.0.0.1:$port" > "$dir/bootstrap"
  local deadline=$((SECONDS + 90))
  until grep -q "Kafka Server started" "$dir/broker.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      die "the broker exited during start-up: $(tail -n 20 "$dir/broker.log")"
    fi
    if [ $SECONDS -ge $deadline ]; then
      kill "$pid" 2>/dev/null || true
      die "the broker did not start within 90 s: $(tail -n 20 "$dir/broker.log")"
    fi
    sleep 0.2
  done
  echo "127.0.0.1:$port"
}

stop() {
  local dir=${1:?usage: kafka.sh stop DIR}
  [ -f "$dir/kafka.pid" ] || return 0
  local pid; pid=$(cat "$dir/kafka.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/kafka.pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: kafka.sh fetch | start DIR | stop DIR" >&2; exit 2 ;;
esac
