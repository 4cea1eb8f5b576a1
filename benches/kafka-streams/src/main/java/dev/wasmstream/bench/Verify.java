package dev.wasmstream.bench;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Checks a word-count run: reads the input and the output topics to their end with a
 * read_committed consumer and checks that, per input partition and word, the output
 * counts are exactly 1, 2, ..., n in order, n being the word's occurrences in that
 * input partition (so the last count is the number of occurrences, and there are
 * no duplicates or gaps). Prints {@code ok: ...} and exits 0, or {@code error: ...}
 * on stderr and exits 1. Not part of wasmstream.
 */
public final class Verify {
    public static void main(String[] args) {
        Map<String, String> opts;
        try {
            opts = WordCount.parse(args, Set.of("--bootstrap", "--input", "--output"), Set.of());
            WordCount.need(opts, "--bootstrap");
            WordCount.need(opts, "--input");
            WordCount.need(opts, "--output");
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage() + "\nusage: Verify --bootstrap HOST:PORT --input TOPIC --output TOPIC");
            System.exit(2);
            return;
        }
        String bootstrap = opts.get("--bootstrap");
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10000);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
            // Expected: per (input partition, word), the number of occurrences.
            Map<String, Long> expected = new HashMap<>();
            long inputs = 0, words = 0;
            for (ConsumerRecord<String, String> r : readAll(c, opts.get("--input"))) {
                inputs++;
                if (r.value() == null) continue;
                for (String w : r.value().split(" ")) {
                    if (w.isEmpty()) continue;
                    expected.merge(r.partition() + "/" + w, 1L, Long::sum);
                    words++;
                }
            }
            // Seen: per (source partition, word), the last count; every count must be the previous + 1.
            Map<String, Long> seen = new HashMap<>();
            long outputs = 0;
            for (ConsumerRecord<String, String> r : readAll(c, opts.get("--output"))) {
                outputs++;
                Header h = r.headers().lastHeader("source-partition");
                String part = h == null ? "0" : new String(h.value(), StandardCharsets.UTF_8);
                String key = part + "/" + r.key();
                long count = Long.parseLong(r.value());
                long prev = seen.getOrDefault(key, 0L);
                if (count != prev + 1) {
                    fail("output offset " + r.partition() + "/" + r.offset() + ": " + key + " = " + count
                            + " after " + prev + " (a duplicate or a gap)");
                }
                seen.put(key, count);
            }
            if (outputs != words) fail(outputs + " output records, but the input has " + words + " words");
            if (!seen.equals(expected)) {
                for (Map.Entry<String, Long> e : expected.entrySet()) {
                    Long got = seen.get(e.getKey());
                    if (!e.getValue().equals(got)) fail(e.getKey() + ": last count " + got + ", expected " + e.getValue());
                }
                fail("the output has words that are not in the input");
            }
            System.out.println("ok: " + inputs + " input records, " + words + " words, " + expected.size()
                    + " distinct (partition, word), " + outputs + " output records; every count is the previous + 1"
                    + " and the last count per word equals its occurrences");
        } catch (Exception e) {
            System.err.println("error: verifying failed: " + e);
            System.exit(1);
        }
    }

    static void fail(String msg) {
        System.err.println("error: " + msg);
        System.exit(1);
    }

    /** Every record of topic up to its end (the last stable offset, read_committed), in offset order per partition. */
    static List<ConsumerRecord<String, String>> readAll(KafkaConsumer<String, String> c, String topic) {
        List<TopicPartition> parts = new ArrayList<>();
        c.partitionsFor(topic, Duration.ofSeconds(30)).forEach(i -> parts.add(new TopicPartition(topic, i.partition())));
        c.assign(parts);
        c.seekToBeginning(parts);
        Map<TopicPartition, Long> end = c.endOffsets(parts, Duration.ofSeconds(30));
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
        while (true) {
            boolean atEnd = true;
            for (TopicPartition tp : parts) if (c.position(tp) < end.get(tp)) atEnd = false;
            if (atEnd) break;
            if (System.nanoTime() > deadline) throw new IllegalStateException(topic + ": not read to its end within 120 s");
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) out.add(r);
        }
        c.unsubscribe();
        return out;
    }
}
