package skiff.compat;

import static skiff.compat.Check.TIMEOUT_MS;
import static skiff.compat.Check.check;
import static skiff.compat.Check.fail;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AlterConfigsOptions;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;

/** The Java-client checks against one broker: producer, consumer with assign/seek, admin. */
final class ClientChecks {
    private ClientChecks() {
    }

    /** A producer with the client's defaults (idempotence on) and acks=all. */
    static KafkaProducer<String, String> producer(Check c) {
        Properties p = c.common();
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(TIMEOUT_MS));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    /** A consumer for assign(): no group. */
    static KafkaConsumer<String, String> consumer(Check c, Map<String, String> extra) {
        Properties p = c.common();
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    /** Polls an assigned consumer until it has returned `count` records (more is a failure). */
    static List<ConsumerRecord<String, String>> pollExactly(KafkaConsumer<String, String> consumer, int count)
            throws InterruptedException {
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        while (got.size() < count && System.currentTimeMillis() < deadline) {
            consumer.poll(Duration.ofMillis(500)).forEach(got::add);
        }
        check(got.size() >= count, () -> "read " + got.size() + " of " + count + " records within " + TIMEOUT_MS + " ms");
        consumer.poll(Duration.ofMillis(1000)).forEach(got::add);
        check(got.size() == count, () -> "read " + got.size() + " records, expected exactly " + count);
        return got;
    }

    static String header(ConsumerRecord<String, String> r, String key) {
        Header h = r.headers().lastHeader(key);
        return h == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    static void producerCheck(Check c) throws Exception {
        final int partitions = 3;
        final int n = 30;
        String topic = c.topic("");
        try (Admin admin = c.admin()) {
            c.createTopic(admin, topic, partitions, Map.of());
        }
        c.phase("produce (acks=all, idempotence by default, keyed, with headers)");
        List<ProducerRecord<String, String>> sent = new ArrayList<>();
        List<RecordMetadata> acked = new ArrayList<>();
        try (KafkaProducer<String, String> producer = producer(c)) {
            List<Future<RecordMetadata>> futures = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                var rec = new ProducerRecord<>(topic, null, "key-" + (i % 7), "value-" + i,
                        List.of(new RecordHeader("index", String.valueOf(i).getBytes(StandardCharsets.UTF_8)),
                                new RecordHeader("client", "java".getBytes(StandardCharsets.UTF_8))));
                sent.add(rec);
                futures.add(producer.send(rec));
            }
            producer.flush();
            for (Future<RecordMetadata> f : futures) {
                acked.add(f.get());
            }
        }
        c.phase("acked partitions and offsets");
        Map<Integer, Long> next = new HashMap<>();
        for (int i = 0; i < n; i++) {
            byte[] key = sent.get(i).key().getBytes(StandardCharsets.UTF_8);
            int want = Utils.toPositive(Utils.murmur2(key)) % partitions;
            RecordMetadata md = acked.get(i);
            int idx = i;
            check(md.partition() == want, () -> "record " + idx + " (key " + sent.get(idx).key() + ") went to partition "
                    + md.partition() + ", the default partitioner's murmur2 says " + want);
            long expect = next.getOrDefault(md.partition(), 0L);
            check(md.offset() == expect, () -> "record " + idx + " acked at offset " + md.offset() + " of partition "
                    + md.partition() + ", expected " + expect + " (offsets of one partition are dense and in send order)");
            next.put(md.partition(), expect + 1);
        }
        c.log("acked " + n + " records, per partition " + next);

        c.phase("read back (assign, from the beginning)");
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        try (KafkaConsumer<String, String> consumer = consumer(c, Map.of())) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<String, ConsumerRecord<String, String>> byPosition = new HashMap<>();
            for (ConsumerRecord<String, String> r : pollExactly(consumer, n)) {
                byPosition.put(r.partition() + "@" + r.offset(), r);
            }
            for (int i = 0; i < n; i++) {
                RecordMetadata md = acked.get(i);
                ConsumerRecord<String, String> r = byPosition.get(md.partition() + "@" + md.offset());
                int idx = i;
                check(r != null, () -> "record " + idx + " acked at " + md + " was not read back");
                String got = r.key() + "=" + r.value() + " index=" + header(r, "index") + " client=" + header(r, "client")
                        + " headers=" + r.headers().toArray().length;
                String want = sent.get(i).key() + "=" + sent.get(i).value() + " index=" + i + " client=java headers=2";
                check(got.equals(want), () -> "record at " + md + " reads back as [" + got + "], sent [" + want + "]");
            }
        }
        c.log("read back " + n + " records with their keys, values and headers");

        c.phase("stored batches carry a producer id (idempotence)");
        int batches = 0;
        for (int p = 0; p < partitions; p++) {
            List<Check.BatchIds> stored = Check.storedBatches(topic, p);
            if (stored == null) {
                c.log("not checked: SKIFF_DATA_DIR is not set");
                return;
            }
            for (Check.BatchIds b : stored) {
                int part = p;
                check(b.producerId() >= 0 && b.baseSequence() >= 0, () -> "partition " + part
                        + " holds a batch with producer id " + b.producerId() + ", base sequence " + b.baseSequence()
                        + ": the producer did not write idempotently");
            }
            batches += stored.size();
        }
        check(batches > 0, () -> "no stored batches found for " + topic + " under SKIFF_DATA_DIR");
        c.log(batches + " stored batches, each with a producer id and sequence");
    }

    static void consumerAssignSeek(Check c) throws Exception {
        final int n = 20;
        String topic = c.topic("");
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 3_600_000;
        try (Admin admin = c.admin()) {
            c.createTopic(admin, topic, 1, Map.of());
        }
        c.phase("produce " + n + " records with timestamps 1 s apart");
        try (KafkaProducer<String, String> producer = producer(c)) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, 0, base + i * 1000L, "k" + i, "v" + i));
            }
            producer.flush();
        }
        try (KafkaConsumer<String, String> consumer = consumer(c, Map.of())) {
            consumer.assign(List.of(tp));
            c.phase("beginningOffsets / endOffsets");
            long begin = consumer.beginningOffsets(List.of(tp)).get(tp);
            long end = consumer.endOffsets(List.of(tp)).get(tp);
            check(begin == 0 && end == n, () -> "beginning " + begin + ", end " + end + "; expected 0 and " + n);

            c.phase("seek(10) and read to the end");
            consumer.seek(tp, 10);
            List<ConsumerRecord<String, String>> got = pollExactly(consumer, n - 10);
            for (int i = 0; i < got.size(); i++) {
                ConsumerRecord<String, String> r = got.get(i);
                long want = 10 + i;
                check(r.offset() == want && r.value().equals("v" + want) && r.timestamp() == base + want * 1000,
                        () -> "after seek(10) read offset " + r.offset() + " value " + r.value() + " timestamp "
                                + r.timestamp() + ", expected offset " + want + " value v" + want);
            }
            check(consumer.position(tp) == n, () -> "position " + consumer.position(tp) + " after the last record, expected " + n);

            c.phase("seekToBeginning then seek(3)");
            consumer.seekToBeginning(List.of(tp));
            check(consumer.position(tp) == 0, () -> "position after seekToBeginning is " + consumer.position(tp));
            consumer.seek(tp, 3);
            ConsumerRecord<String, String> first = pollExactly(consumer, n - 3).get(0);
            check(first.offset() == 3 && first.value().equals("v3"),
                    () -> "first record after seek(3) is offset " + first.offset() + " value " + first.value());

            c.phase("offsetsForTimes");
            var byTime = consumer.offsetsForTimes(Map.of(tp, base + 5_500L)).get(tp);
            check(byTime != null && byTime.offset() == 6 && byTime.timestamp() == base + 6_000,
                    () -> "offsetsForTimes(base + 5.5 s) = " + byTime + ", expected offset 6 at base + 6 s");

            c.phase("seekToEnd");
            consumer.seekToEnd(List.of(tp));
            check(consumer.position(tp) == n, () -> "position after seekToEnd is " + consumer.position(tp) + ", expected " + n);
        }
    }

    static void adminTopics(Check c) throws Exception {
        String topic = c.topic("");
        try (Admin admin = c.admin()) {
            c.phase("describeCluster");
            DescribeClusterResult cluster = admin.describeCluster();
            Collection<Node> nodes = cluster.nodes().get();
            Node controller = cluster.controller().get();
            String clusterId = cluster.clusterId().get();
            c.log("cluster " + clusterId + ", controller " + controller + ", nodes " + nodes);
            check(clusterId != null && !clusterId.isEmpty(), () -> "no cluster id");
            check(!nodes.isEmpty() && nodes.stream().allMatch(nd -> nd.port() > 0), () -> "nodes " + nodes);
            check(controller != null && nodes.stream().anyMatch(nd -> nd.id() == controller.id()),
                    () -> "controller " + controller + " is not one of the nodes " + nodes);

            c.phase("createTopics (4 partitions, retention.ms)");
            TopicDescription d = c.createTopic(admin, topic, 4, Map.of("retention.ms", "3600000"));

            c.phase("describeTopics");
            check(d.partitions().size() == 4, () -> "describeTopics shows " + d.partitions().size() + " partitions");
            check(d.topicId() != null && !d.topicId().equals(org.apache.kafka.common.Uuid.ZERO_UUID), () -> "topic id " + d.topicId());
            for (var p : d.partitions()) {
                check(p.replicas().size() == 1 && p.isr().size() == 1 && p.replicas().get(0).equals(p.leader()),
                        () -> "partition " + p + ": expected one replica, the leader, in sync");
            }
            check(!d.isInternal(), () -> "topic described as internal");

            c.phase("listTopics");
            Set<String> names = admin.listTopics().names().get();
            check(names.contains(topic), () -> "listTopics lacks " + topic + ": " + names);

            c.phase("createTopics of an existing topic");
            try {
                admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
                throw fail("creating " + topic + " a second time succeeded");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException,
                        () -> "creating an existing topic failed with " + e.getCause() + ", expected TopicExistsException");
            }

            c.phase("deleteTopics");
            admin.deleteTopics(List.of(topic)).all().get();
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (admin.listTopics().names().get().contains(topic)) {
                check(System.currentTimeMillis() < deadline, () -> topic + " still listed " + TIMEOUT_MS + " ms after deleteTopics");
                Thread.sleep(250);
            }
            try {
                admin.describeTopics(List.of(topic)).allTopicNames().get();
                throw fail("describeTopics of the deleted topic succeeded");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicOrPartitionException,
                        () -> "describing the deleted topic failed with " + e.getCause() + ", expected UnknownTopicOrPartitionException");
            }
        }
    }

    static void adminOffsets(Check c) throws Exception {
        final int n = 10;
        String topic = c.topic("");
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        long base = System.currentTimeMillis() - 3_600_000;
        try (Admin admin = c.admin()) {
            c.createTopic(admin, topic, 2, Map.of());
            c.phase("produce " + n + " records to partition 0, none to 1");
            try (KafkaProducer<String, String> producer = producer(c)) {
                for (int i = 0; i < n; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, base + i * 1000L, "k", "v" + i));
                }
                producer.flush();
            }

            c.phase("listOffsets earliest / latest / maxTimestamp / forTimestamp");
            Map<String, Long> got = new java.util.TreeMap<>();
            Map<String, String> want = new java.util.TreeMap<>();
            Map<String, Map.Entry<TopicPartition, OffsetSpec>> specs = Map.of(
                    "p0 earliest", Map.entry(p0, OffsetSpec.earliest()),
                    "p0 latest", Map.entry(p0, OffsetSpec.latest()),
                    "p0 maxTimestamp", Map.entry(p0, OffsetSpec.maxTimestamp()),
                    "p0 forTimestamp(base+3.5s)", Map.entry(p0, OffsetSpec.forTimestamp(base + 3_500)),
                    "p1 earliest", Map.entry(p1, OffsetSpec.earliest()),
                    "p1 latest", Map.entry(p1, OffsetSpec.latest()));
            want.putAll(Map.of("p0 earliest", "0", "p0 latest", "10", "p0 maxTimestamp", "9",
                    "p0 forTimestamp(base+3.5s)", "4", "p1 earliest", "0", "p1 latest", "0"));
            for (var e : specs.entrySet()) {
                ListOffsetsResultInfo info = admin.listOffsets(Map.of(e.getValue().getKey(), e.getValue().getValue()))
                        .partitionResult(e.getValue().getKey()).get();
                got.put(e.getKey(), info.offset());
            }
            Map<String, String> gotStr = new java.util.TreeMap<>();
            got.forEach((k, v) -> gotStr.put(k, String.valueOf(v)));
            check(gotStr.equals(want), () -> "listOffsets gave " + gotStr + ", expected " + want);

            c.phase("deleteRecords before offset 4");
            long low = admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(p0).get().lowWatermark();
            check(low == 4, () -> "deleteRecords reports low watermark " + low + ", expected 4");
            long earliest = admin.listOffsets(Map.of(p0, OffsetSpec.earliest())).partitionResult(p0).get().offset();
            check(earliest == 4, () -> "listOffsets earliest after deleteRecords is " + earliest + ", expected 4");

            c.phase("read from the beginning after deleteRecords");
            try (KafkaConsumer<String, String> consumer = consumer(c, Map.of())) {
                consumer.assign(List.of(p0));
                consumer.seekToBeginning(List.of(p0));
                List<ConsumerRecord<String, String>> recs = pollExactly(consumer, n - 4);
                check(recs.get(0).offset() == 4 && recs.get(0).value().equals("v4"),
                        () -> "first record is offset " + recs.get(0).offset() + " value " + recs.get(0).value() + ", expected 4 / v4");
            }
        }
    }

    static Config describeTopicConfig(Admin admin, String topic) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return admin.describeConfigs(List.of(r)).all().get().get(r);
    }

    static String entry(Config cfg, String name) {
        ConfigEntry e = cfg.get(name);
        return e == null ? "absent" : e.value() + " (" + e.source() + ")";
    }

    static void adminConfigs(Check c) throws Exception {
        String topic = c.topic("");
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        try (Admin admin = c.admin()) {
            c.createTopic(admin, topic, 1, Map.of("retention.ms", "86400000"));

            c.phase("describeConfigs after create");
            Config cfg = describeTopicConfig(admin, topic);
            check(entry(cfg, "retention.ms").equals("86400000 (DYNAMIC_TOPIC_CONFIG)"),
                    () -> "retention.ms is " + entry(cfg, "retention.ms") + ", expected 86400000 (DYNAMIC_TOPIC_CONFIG)");
            check(entry(cfg, "cleanup.policy").equals("delete (DEFAULT_CONFIG)"),
                    () -> "cleanup.policy is " + entry(cfg, "cleanup.policy") + ", expected delete (DEFAULT_CONFIG)");

            c.phase("incrementalAlterConfigs SET max.message.bytes, DELETE retention.ms, APPEND cleanup.policy");
            admin.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "200000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND))))
                    .all().get();
            Config after = describeTopicConfig(admin, topic);
            Map<String, String> got = Map.of(
                    "max.message.bytes", entry(after, "max.message.bytes"),
                    "retention.ms", after.get("retention.ms") == null ? "absent" : after.get("retention.ms").source().toString(),
                    "cleanup.policy", entry(after, "cleanup.policy"));
            Map<String, String> want = Map.of(
                    "max.message.bytes", "200000 (DYNAMIC_TOPIC_CONFIG)",
                    "retention.ms", "DEFAULT_CONFIG",
                    "cleanup.policy", "delete,compact (DYNAMIC_TOPIC_CONFIG)");
            check(got.equals(want), () -> "after the alter: " + new java.util.TreeMap<>(got) + ", expected " + new java.util.TreeMap<>(want));

            c.phase("incrementalAlterConfigs SUBTRACT cleanup.policy");
            admin.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", "delete"), AlterConfigOp.OpType.SUBTRACT)))).all().get();
            String policy = entry(describeTopicConfig(admin, topic), "cleanup.policy");
            check(policy.equals("compact (DYNAMIC_TOPIC_CONFIG)"), () -> "cleanup.policy after SUBTRACT delete: " + policy);

            c.phase("incrementalAlterConfigs refuses an invalid value (validateOnly)");
            try {
                admin.incrementalAlterConfigs(Map.of(res, List.of(new AlterConfigOp(
                        new ConfigEntry("retention.ms", "not-a-number"), AlterConfigOp.OpType.SET))),
                        new AlterConfigsOptions().validateOnly(true)).all().get();
                throw fail("retention.ms=not-a-number was accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidConfigurationException,
                        () -> "an invalid retention.ms failed with " + e.getCause() + ", expected InvalidConfigurationException");
            }
            String ret = entry(describeTopicConfig(admin, topic), "retention.ms");
            check(ret.endsWith("(DEFAULT_CONFIG)"), () -> "retention.ms after a refused alter: " + ret);

            c.phase("describeConfigs of a broker");
            int broker = admin.describeCluster().controller().get().id();
            ConfigResource br = new ConfigResource(ConfigResource.Type.BROKER, String.valueOf(broker));
            Config bcfg = admin.describeConfigs(List.of(br)).all().get().get(br);
            check(!bcfg.entries().isEmpty(), () -> "broker " + broker + " describes no configs");
            c.log("broker " + broker + " describes " + bcfg.entries().size() + " configs, e.g. "
                    + Arrays.toString(bcfg.entries().stream().limit(3).map(ConfigEntry::name).toArray()));
        }
    }
}
