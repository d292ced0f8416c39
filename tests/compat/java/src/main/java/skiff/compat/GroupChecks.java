package skiff.compat;

import static skiff.compat.Check.GROUP_PARTITIONS;
import static skiff.compat.Check.TIMEOUT_MS;
import static skiff.compat.Check.check;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;

/** The Java-client consumer-group checks (classic protocol), run on the 3-broker cluster. */
final class GroupChecks {
    private GroupChecks() {
    }

    /** A group member on its own thread: polls, records what it read, commits when stopped. */
    static final class Member implements Runnable {
        final KafkaConsumer<String, String> consumer;
        final String topic;
        final Set<TopicPartition> assigned = ConcurrentHashMap.newKeySet();
        final ConcurrentLinkedQueue<ConsumerRecord<String, String>> read = new ConcurrentLinkedQueue<>();
        final AtomicBoolean stop = new AtomicBoolean();
        volatile Throwable error;
        final Thread thread = new Thread(this);

        Member(Check c, String group, String topic) {
            this.consumer = ClientChecks.consumer(c, Map.of(
                    ConsumerConfig.GROUP_ID_CONFIG, group,
                    ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic"));
            this.topic = topic;
            thread.start();
        }

        @Override
        public void run() {
            try (consumer) {
                consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    @Override
                    public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                        assigned.removeAll(parts);
                    }

                    @Override
                    public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                        assigned.addAll(parts);
                    }
                });
                while (!stop.get()) {
                    consumer.poll(Duration.ofMillis(200)).forEach(read::add);
                }
                consumer.commitSync(Duration.ofMillis(TIMEOUT_MS));
            } catch (Throwable e) {
                error = e;
            }
        }

        /** Commits what it read, leaves the group, and fails if anything went wrong in it. */
        void stopAndCommit(String name) throws InterruptedException {
            stop.set(true);
            thread.join(TIMEOUT_MS + 30_000L);
            check(!thread.isAlive(), () -> name + " did not stop and commit");
            check(error == null, () -> name + ": " + error);
        }
    }

    static void waitFor(String what, java.util.function.BooleanSupplier cond) throws InterruptedException {
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        while (!cond.getAsBoolean()) {
            check(System.currentTimeMillis() < deadline, () -> what + " did not happen within " + TIMEOUT_MS + " ms");
            Thread.sleep(100);
        }
    }

    /** Produces `perPartition` records to every partition, values "p<partition>-<offset>". */
    static void produce(Check c, String topic, int perPartition, Map<Integer, Long> from) throws Exception {
        try (KafkaProducer<String, String> producer = ClientChecks.producer(c)) {
            for (int p = 0; p < GROUP_PARTITIONS; p++) {
                for (int i = 0; i < perPartition; i++) {
                    producer.send(new ProducerRecord<>(topic, p, "k", "p" + p + "-" + (from.getOrDefault(p, 0L) + i)));
                }
            }
            producer.flush();
        }
    }

    static Map<Integer, Long> ends(Admin admin, String topic) throws Exception {
        Map<TopicPartition, OffsetSpec> q = new HashMap<>();
        for (int p = 0; p < GROUP_PARTITIONS; p++) {
            q.put(new TopicPartition(topic, p), OffsetSpec.latest());
        }
        Map<Integer, Long> out = new TreeMap<>();
        admin.listOffsets(q).all().get().forEach((tp, info) -> out.put(tp.partition(), info.offset()));
        return out;
    }

    static Map<Integer, Long> committed(Admin admin, String group) throws Exception {
        Map<Integer, Long> out = new TreeMap<>();
        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                .forEach((tp, om) -> {
                    if (om != null) {
                        out.put(tp.partition(), om.offset());
                    }
                });
        return out;
    }

    /** Fails unless `read` holds each (partition, offset) from `from` to `to` exactly once, with its value. */
    static void checkRead(String what, Collection<ConsumerRecord<String, String>> read, Map<Integer, Long> from,
            Map<Integer, Long> to) {
        Set<String> want = new HashSet<>();
        for (int p = 0; p < GROUP_PARTITIONS; p++) {
            for (long o = from.getOrDefault(p, 0L); o < to.get(p); o++) {
                want.add("p" + p + "-" + o);
            }
        }
        List<String> got = new ArrayList<>();
        List<String> wrong = new ArrayList<>();
        for (ConsumerRecord<String, String> r : read) {
            String id = "p" + r.partition() + "-" + r.offset();
            got.add(id);
            if (!r.value().equals(id)) {
                wrong.add(id + " has value " + r.value());
            }
        }
        Set<String> missing = new HashSet<>(want);
        got.forEach(missing::remove);
        Set<String> extra = new HashSet<>(got);
        extra.removeAll(want);
        check(wrong.isEmpty() && missing.isEmpty() && extra.isEmpty() && got.size() == want.size(),
                () -> what + ": read " + got.size() + " records, expected " + want.size() + "; missing " + missing
                        + ", unexpected " + extra + ", wrong values " + wrong);
    }

    static TopicDescription setup(Check c, Admin admin, String topic) throws Exception {
        TopicDescription d = c.createTopic(admin, topic, GROUP_PARTITIONS, Map.of());
        c.checkLeaderSpread(admin.describeCluster().nodes().get().size(), d);
        return d;
    }

    static void consume(Check c) throws Exception {
        String topic = c.topic("");
        String group = topic + "-group";
        try (Admin admin = c.admin()) {
            Map<Integer, Integer> leaders = Check.leaders(setup(c, admin, topic));

            c.phase("two members join and split the 6 partitions");
            Member a = new Member(c, group, topic);
            Member b = new Member(c, group, topic);
            waitFor("both members assigned, all 6 partitions between them", () -> !a.assigned.isEmpty()
                    && !b.assigned.isEmpty() && a.assigned.size() + b.assigned.size() == GROUP_PARTITIONS);
            c.log("member a: " + a.assigned + ", member b: " + b.assigned);

            c.phase("produce 10 records per partition; the members read them");
            produce(c, topic, 10, Map.of());
            waitFor("the members reading 60 records", () -> a.read.size() + b.read.size() >= 60);
            a.stopAndCommit("member a");
            b.stopAndCommit("member b");
            List<ConsumerRecord<String, String>> all = new ArrayList<>(a.read);
            all.addAll(b.read);
            Map<Integer, Long> ends = ends(admin, topic);
            checkRead("two members", all, Map.of(), ends);
            check(!a.read.isEmpty() && !b.read.isEmpty(),
                    () -> "member a read " + a.read.size() + ", member b " + b.read.size() + ": each should read some");

            c.phase("committed offsets after two members");
            c.compareCommitted("after two members", committed(admin, group), ends, leaders);

            c.phase("a new member resumes from the committed offsets");
            produce(c, topic, 2, ends);
            Member d = new Member(c, group, topic);
            Map<Integer, Long> newEnds = ends(admin, topic);
            waitFor("the new member reading 12 records", () -> d.read.size() >= 12);
            Thread.sleep(1000); // anything read beyond the 12 records is a failure below
            d.stopAndCommit("resumed member");
            checkRead("resumed member", d.read, ends, newEnds);

            c.phase("committed offsets after the resumed member");
            c.compareCommitted("after the resumed member", committed(admin, group), newEnds, leaders);
        }
    }

    static void admin(Check c) throws Exception {
        String topic = c.topic("");
        String group = topic + "-group";
        try (Admin admin = c.admin()) {
            Map<Integer, Integer> leaders = Check.leaders(setup(c, admin, topic));
            produce(c, topic, 6, Map.of());
            Map<Integer, Long> ends = ends(admin, topic);

            c.phase("one member reads everything");
            Member m = new Member(c, group, topic);
            waitFor("the member reading 36 records", () -> m.read.size() >= 36);

            c.phase("describeConsumerGroups while the member is in it");
            ConsumerGroupDescription live = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get();
            c.log("described: " + live);
            Set<TopicPartition> described = new HashSet<>();
            live.members().forEach(md -> described.addAll(md.assignment().topicPartitions()));
            check(live.groupState() == GroupState.STABLE && live.members().size() == 1
                    && described.size() == GROUP_PARTITIONS && live.type() == GroupType.CLASSIC
                    && live.coordinator() != null && live.partitionAssignor().equals("range"),
                    () -> "expected a STABLE CLASSIC group, coordinator known, assignor range, with 1 member assigned all "
                            + GROUP_PARTITIONS + " partitions; got " + live);
            m.stopAndCommit("member");

            c.phase("listGroups (consumer groups)");
            Collection<GroupListing> groups = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get();
            check(groups.stream().anyMatch(g -> g.groupId().equals(group)
                    && g.groupState().orElse(null) == GroupState.EMPTY),
                    () -> "listGroups lacks " + group + " in state EMPTY: " + groups);

            c.phase("describeConsumerGroups after the member left");
            ConsumerGroupDescription empty = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get();
            check(empty.groupState() == GroupState.EMPTY && empty.members().isEmpty(),
                    () -> "expected EMPTY with no members, got " + empty);

            c.phase("listConsumerGroupOffsets");
            c.compareCommitted("after the member", committed(admin, group), ends, leaders);

            c.phase("alterConsumerGroupOffsets partition 0 -> 2, partition 1 -> 3");
            admin.alterConsumerGroupOffsets(group, Map.of(
                    new TopicPartition(topic, 0), new OffsetAndMetadata(2),
                    new TopicPartition(topic, 1), new OffsetAndMetadata(3))).all().get();
            Map<Integer, Long> want = new TreeMap<>(ends);
            want.put(0, 2L);
            want.put(1, 3L);
            Map<Integer, Long> altered = committed(admin, group);
            check(altered.equals(want), () -> "committed offsets " + altered + ", expected " + want);

            c.phase("deleteConsumerGroupOffsets partition 0");
            admin.deleteConsumerGroupOffsets(group, Set.of(new TopicPartition(topic, 0))).all().get();
            want.remove(0);
            Map<Integer, Long> afterDelete = committed(admin, group);
            check(afterDelete.equals(want), () -> "committed offsets " + afterDelete + ", expected " + want);

            c.phase("a member resumes: partition 0 from the beginning, partition 1 from 3, the rest at their ends");
            Member r = new Member(c, group, topic);
            waitFor("the member reading 9 records", () -> r.read.size() >= 9);
            Thread.sleep(1000); // anything read beyond the 9 records is a failure below
            r.stopAndCommit("resumed member");
            Map<Integer, Long> from = new TreeMap<>(ends);
            from.put(0, 0L);
            from.put(1, 3L);
            checkRead("resumed member", r.read, from, ends);

            c.phase("deleteConsumerGroups");
            admin.deleteConsumerGroups(List.of(group)).all().get();
            Collection<GroupListing> left = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get();
            check(left.stream().noneMatch(g -> g.groupId().equals(group)), () -> group + " still listed after deleteConsumerGroups");
        }
    }
}
