package dev.wasmstream.bench;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The benchmark's reference peer: a Kafka Streams word count with the semantics of
 * wasmstream's word count, written with the Processor API (source, one processor
 * with a persistent RocksDB key-value store with its changelog, sink), so state is
 * per task (input partition) and there is no repartition topic.
 *
 * <p>For each input record the value is split on ' ' (empty words skipped); for each
 * word, count = state[word] + 1 is stored and one record word → decimal count is
 * emitted (every update, record cache 0). Like wasmstream's outputs, each output
 * carries a {@code source-partition} header naming the input partition.
 *
 * <p>stdout protocol: {@code started} when the first record is processed, then
 * {@code processed N records in S.SSS s} (first record to the N-th) once
 * {@code --expect-records} records have been processed; then the app closes
 * (committing) and exits 0. Errors: a line starting with {@code error:} on stderr,
 * exit 1.
 *
 * <p>Not part of wasmstream.
 */
public final class WordCount {
    static final String STORE = "counts";

    /** Counters shared by the processor instances (one stream thread). */
    static final class Progress {
        final long expect;
        long processed;
        long firstNanos;
        final CountDownLatch done = new CountDownLatch(1);

        Progress(long expect) {
            this.expect = expect;
        }

        /** Called on the stream thread before a record is processed. */
        void begin() {
            if (processed == 0 && firstNanos == 0) {
                firstNanos = System.nanoTime();
                System.out.println("started");
                System.out.flush();
            }
        }

        /** Called on the stream thread after a record is processed. */
        void end() {
            processed++;
            if (processed == expect) {
                double s = (System.nanoTime() - firstNanos) / 1e9;
                System.out.println(String.format(Locale.ROOT, "processed %d records in %.3f s", processed, s));
                System.out.flush();
                done.countDown();
            }
        }
    }

    static final class Count implements Processor<String, String, String, String> {
        private final Progress progress;
        private ProcessorContext<String, String> context;
        private KeyValueStore<String, Long> counts;
        private byte[] partition;

        Count(Progress progress) {
            this.progress = progress;
        }

        @Override
        public void init(ProcessorContext<String, String> context) {
            this.context = context;
            this.counts = context.getStateStore(STORE);
            this.partition = Integer.toString(context.taskId().partition()).getBytes(StandardCharsets.UTF_8);
        }

        @Override
        public void process(Record<String, String> record) {
            progress.begin();
            String value = record.value();
            if (value != null) {
                int start = 0;
                int n = value.length();
                while (start <= n) {
                    int end = value.indexOf(' ', start);
                    if (end < 0) end = n;
                    if (end > start) {
                        String word = value.substring(start, end);
                        Long old = counts.get(word);
                        long count = (old == null ? 0L : old) + 1;
                        counts.put(word, count);
                        RecordHeaders headers = new RecordHeaders();
                        headers.add("source-partition", partition);
                        context.forward(new Record<>(word, Long.toString(count), record.timestamp(), headers));
                    }
                    start = end + 1;
                }
            }
            progress.end();
        }
    }

    static Map<String, String> parse(String[] args, Set<String> names, Set<String> flags) {
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (flags.contains(a)) {
                out.put(a, "true");
            } else if (names.contains(a) && i + 1 < args.length) {
                out.put(a, args[++i]);
            } else {
                throw new IllegalArgumentException("unknown or incomplete argument " + a);
            }
        }
        return out;
    }

    static String need(Map<String, String> opts, String name) {
        String v = opts.get(name);
        if (v == null) throw new IllegalArgumentException("missing " + name);
        return v;
    }

    static final String USAGE = "usage: WordCount --bootstrap HOST:PORT --input TOPIC --output TOPIC"
            + " --application-id ID --state-dir DIR --commit-interval-ms N"
            + " --guarantee at_least_once|exactly_once_v2 --expect-records N [--create-topics]";

    public static void main(String[] args) {
        Map<String, String> opts;
        long expect;
        try {
            opts = parse(args,
                    Set.of("--bootstrap", "--input", "--output", "--application-id", "--state-dir",
                            "--commit-interval-ms", "--guarantee", "--expect-records"),
                    Set.of("--create-topics"));
            for (String n : List.of("--bootstrap", "--input", "--output", "--application-id", "--state-dir",
                    "--commit-interval-ms", "--guarantee", "--expect-records")) {
                need(opts, n);
            }
            expect = Long.parseLong(opts.get("--expect-records"));
            Long.parseLong(opts.get("--commit-interval-ms"));
            String g = opts.get("--guarantee");
            if (!g.equals(StreamsConfig.AT_LEAST_ONCE) && !g.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
                throw new IllegalArgumentException("--guarantee must be at_least_once or exactly_once_v2, not " + g);
            }
            if (expect <= 0) throw new IllegalArgumentException("--expect-records must be positive");
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage() + "\n" + USAGE);
            System.exit(2);
            return;
        }
        String bootstrap = opts.get("--bootstrap");
        String input = opts.get("--input");
        String output = opts.get("--output");

        if (opts.containsKey("--create-topics")) {
            try {
                createOutputTopic(bootstrap, input, output);
            } catch (Exception e) {
                System.err.println("error: creating the output topic " + output + " failed: " + e);
                System.exit(1);
            }
        }

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, opts.get("--application-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, opts.get("--commit-interval-ms"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, opts.get("--guarantee"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, opts.get("--state-dir"));
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0L);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");

        Progress progress = new Progress(expect);
        Topology topology = new Topology();
        topology.addSource("input", new StringDeserializer(), new StringDeserializer(), input);
        topology.addProcessor("count", () -> new Count(progress), "input");
        topology.addStateStore(
                Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.Long()),
                "count");
        topology.addSink("output", output, new StringSerializer(), new StringSerializer(), "count");

        AtomicReference<Throwable> failure = new AtomicReference<>();
        KafkaStreams streams = new KafkaStreams(topology, props);
        streams.setUncaughtExceptionHandler(e -> {
            failure.compareAndSet(null, e);
            progress.done.countDown();
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.PENDING_ERROR) {
                failure.compareAndSet(null, new IllegalStateException("Kafka Streams went from " + before + " to " + now));
                progress.done.countDown();
            }
        });
        AtomicBoolean closed = new AtomicBoolean();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (closed.compareAndSet(false, true)) streams.close(Duration.ofSeconds(30));
        }, "close-on-exit"));

        try {
            streams.start();
            progress.done.await();
        } catch (Throwable e) {
            failure.compareAndSet(null, e);
        }
        boolean clean = false;
        if (closed.compareAndSet(false, true)) clean = streams.close(Duration.ofSeconds(60));
        Throwable e = failure.get();
        if (e != null) {
            StringBuilder msg = new StringBuilder("error: the Kafka Streams word count failed: " + e);
            for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
                msg.append("; caused by ").append(c);
            }
            System.err.println(msg);
            System.exit(1);
        }
        if (!clean) {
            System.err.println("error: Kafka Streams did not close within 60 s (the last commit may be missing)");
            System.exit(1);
        }
        System.exit(0);
    }

    /** Creates the output topic with the input topic's partition count, unless it exists. */
    static void createOutputTopic(String bootstrap, String input, String output) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            int partitions = admin.describeTopics(List.of(input)).allTopicNames().get().get(input).partitions().size();
            try {
                admin.createTopics(List.of(new NewTopic(output, Optional.of(partitions), Optional.empty()))).all().get();
            } catch (java.util.concurrent.ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
            }
        }
    }
}
