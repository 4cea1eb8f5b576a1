package dev.wasmstream.bench;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Writes the benchmark's word-count input: {@code --count} records, key
 * {@code key-<i, 12 digits>}, value a ~100-byte sentence over a 5,000-word vocabulary
 * ("w12 w7 w3301 ..."), the same sentences as {@code sentence(i)} in
 * benches/src/throughput.rs. Creates the topic with {@code --partitions} partitions
 * (default 1) if it does not exist. Not part of wasmstream.
 */
public final class Produce {
    /** The i-th sentence, as benches/src/throughput.rs writes it (xorshift64 from i * golden ratio). */
    public static String sentence(long i) {
        StringBuilder s = new StringBuilder(110);
        long x = (i * 0x9E3779B97F4A7C15L) | 1;
        while (s.length() < 95) {
            x ^= x << 13;
            x ^= x >>> 7;
            x ^= x << 17;
            s.append('w').append(Long.remainderUnsigned(x, 5000)).append(' ');
        }
        s.setLength(s.length() - 1);
        return s.toString();
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opts;
        long count;
        int partitions;
        try {
            opts = WordCount.parse(args, Set.of("--bootstrap", "--topic", "--count", "--partitions"), Set.of());
            WordCount.need(opts, "--bootstrap");
            WordCount.need(opts, "--topic");
            count = Long.parseLong(WordCount.need(opts, "--count"));
            partitions = Integer.parseInt(opts.getOrDefault("--partitions", "1"));
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage()
                    + "\nusage: Produce --bootstrap HOST:PORT --topic TOPIC --count N [--partitions P]");
            System.exit(2);
            return;
        }
        String bootstrap = opts.get("--bootstrap");
        String topic = opts.get("--topic");
        try {
            Properties a = new Properties();
            a.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            try (Admin admin = Admin.create(a)) {
                try {
                    admin.createTopics(List.of(new NewTopic(topic, Optional.of(partitions), Optional.empty()))).all().get();
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) throw e;
                }
            }
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.ACKS_CONFIG, "all");
            p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            p.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
            long t0 = System.nanoTime();
            try (KafkaProducer<byte[], byte[]> producer =
                         new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
                for (long i = 0; i < count; i++) {
                    byte[] key = String.format(Locale.ROOT, "key-%012d", i).getBytes(StandardCharsets.UTF_8);
                    byte[] value = sentence(i).getBytes(StandardCharsets.UTF_8);
                    producer.send(new ProducerRecord<>(topic, key, value), (md, e) -> {
                        if (e != null) {
                            System.err.println("error: producing to " + topic + " failed: " + e);
                            System.exit(1);
                        }
                    });
                }
                producer.flush();
            }
            System.out.println(String.format(Locale.ROOT, "produced %d records to %s in %.3f s",
                    count, topic, (System.nanoTime() - t0) / 1e9));
        } catch (Exception e) {
            System.err.println("error: producing to " + topic + " failed: " + e);
            System.exit(1);
        }
    }
}
