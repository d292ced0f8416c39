package skiff.compat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.function.Supplier;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;

/**
 * The Java-client checks of the compatibility suite: {@code java -cp ... skiff.compat.Check
 * --step NAME [--bootstrap H:P,...]}. A failing step ends with the line {@code FAILED: <phase>:
 * <reason>}, which run.sh shows on its FAIL line; the phase says which part of the check failed.
 */
public final class Check {
    /** A check's verification that did not hold. */
    static final class Failed extends RuntimeException {
        Failed(String msg) {
            super(msg);
        }
    }

    interface Step {
        void run(Check c) throws Exception;
    }

    /** Partitions of a group check's topic: leaders placed round-robin land on all 3 brokers. */
    static final int GROUP_PARTITIONS = 6;
    /** Generous: a 2-core CI machine runs other builds at the same time. */
    static final int TIMEOUT_MS = 60_000;

    static final Map<String, Step> STEPS = new LinkedHashMap<>();

    static {
        STEPS.put("java-producer", ClientChecks::producerCheck);
        STEPS.put("java-consumer-assign-seek", ClientChecks::consumerAssignSeek);
        STEPS.put("java-admin-topics", ClientChecks::adminTopics);
        STEPS.put("java-admin-offsets", ClientChecks::adminOffsets);
        STEPS.put("java-admin-configs", ClientChecks::adminConfigs);
        STEPS.put("java-group-consume", GroupChecks::consume);
        STEPS.put("java-group-admin", GroupChecks::admin);
    }

    final String bootstrap;
    final String stepName;
    private String phase = "setup";

    Check(String bootstrap, String stepName) {
        this.bootstrap = bootstrap;
        this.stepName = stepName;
    }

    public static void main(String[] args) {
        String bootstrap = System.getenv().getOrDefault("SKIFF_BOOTSTRAP", "127.0.0.1:19092");
        String name = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--bootstrap" -> bootstrap = args[++i];
                case "--step" -> name = args[++i];
                case "--list" -> {
                    STEPS.keySet().forEach(System.out::println);
                    return;
                }
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        Step step = STEPS.get(name);
        if (step == null) {
            System.out.println("FAILED: unknown step " + name + "; steps: " + STEPS.keySet());
            System.exit(2);
        }
        Check c = new Check(bootstrap, name);
        c.log("step " + name + " against " + bootstrap);
        try {
            step.run(c);
        } catch (Failed e) {
            System.out.println("FAILED: " + c.phase + ": " + e.getMessage());
            System.exit(1);
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            System.out.println("FAILED: " + c.phase + ": " + e);
            System.exit(1);
        }
        c.log("ok");
        System.exit(0);
    }

    /** Names the part of the check that runs from now on, for the failure line. */
    void phase(String p) {
        phase = p;
        log("-- " + p);
    }

    void log(String msg) {
        System.out.println("  .. " + msg);
        System.out.flush();
    }

    static void check(boolean cond, Supplier<String> msg) {
        if (!cond) {
            throw new Failed(msg.get());
        }
    }

    static Failed fail(String msg) {
        return new Failed(msg);
    }

    /** A topic name unique to this run and step. */
    String topic(String suffix) {
        String rid = System.getenv().getOrDefault("SKIFF_COMPAT_RUN_ID", "j" + ProcessHandle.current().pid());
        return ("compat-" + rid + "-" + stepName + (suffix.isEmpty() ? "" : "-" + suffix)).replace('_', '-');
    }

    Properties common() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(TIMEOUT_MS));
        return p;
    }

    Admin admin() {
        return Admin.create(common());
    }

    /** Creates a topic and waits until every partition has a leader in Metadata. */
    TopicDescription createTopic(Admin admin, String topic, int partitions, Map<String, String> configs)
            throws Exception {
        admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1).configs(configs))).all().get();
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        String last = "";
        while (System.currentTimeMillis() < deadline) {
            try {
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
                if (d.partitions().size() == partitions && d.partitions().stream().allMatch(p -> p.leader() != null)) {
                    return d;
                }
                last = d.toString();
            } catch (Exception e) {
                last = e.toString();
            }
            Thread.sleep(250);
        }
        throw fail("topic " + topic + " has no leader on all " + partitions + " partitions after "
                + TIMEOUT_MS + " ms: " + last);
    }

    /** SKIFF_COMPAT_EXPECT_BROKERS (set by run.sh for the group checks), or 0 if unset. */
    static int expectedBrokers() {
        String v = System.getenv().getOrDefault("SKIFF_COMPAT_EXPECT_BROKERS", "").trim();
        return v.isEmpty() ? 0 : Integer.parseInt(v);
    }

    /** Fails unless the cluster has the brokers run.sh started and the leaders are spread over them. */
    void checkLeaderSpread(int brokers, TopicDescription d) {
        Map<Integer, Integer> leaders = leaders(d);
        log("cluster has " + brokers + " broker(s); " + d.name() + " partition leaders " + leaders);
        int want = expectedBrokers();
        if (want == 0) {
            return;
        }
        check(brokers == want, () -> "describeCluster lists " + brokers + " broker(s), run.sh started " + want);
        int spread = new TreeSet<>(leaders.values()).size();
        check(spread >= Math.min(want, leaders.size()),
                () -> "leaders " + leaders + " are not spread over the " + want + " brokers");
    }

    static Map<Integer, Integer> leaders(TopicDescription d) {
        Map<Integer, Integer> m = new TreeMap<>();
        for (TopicPartitionInfo p : d.partitions()) {
            m.put(p.partition(), p.leader() == null ? -1 : p.leader().id());
        }
        return m;
    }

    /**
     * Fails naming every partition whose committed offset is not its end. committed: partition ->
     * offset, absent when nothing is committed.
     */
    void compareCommitted(String what, Map<Integer, Long> committed, Map<Integer, Long> ends,
            Map<Integer, Integer> leaders) {
        List<String> bad = new ArrayList<>();
        for (var e : new TreeMap<>(ends).entrySet()) {
            Long got = committed.get(e.getKey());
            if (got == null || !got.equals(e.getValue())) {
                bad.add("partition " + e.getKey() + " (leader broker " + leaders.get(e.getKey()) + "): "
                        + (got == null ? "nothing committed" : "committed " + got) + ", end " + e.getValue());
            }
        }
        check(bad.isEmpty(), () -> what + ": " + bad.size() + " of " + ends.size()
                + " partitions' committed offsets are not their ends: " + String.join("; ", bad));
        log(what + ": committed offset == end offset on all " + ends.size() + " partitions: " + new TreeMap<>(ends));
    }

    /** A stored record batch's producer id and base sequence (bytes 43-50 and 53-56 of its header). */
    record BatchIds(long producerId, int baseSequence) {
    }

    /**
     * The batches of a partition as the broker stored them, read from its segment files under
     * SKIFF_DATA_DIR (set by run.sh); null when no data dir is given (a check run on its own).
     */
    static List<BatchIds> storedBatches(String topic, int partition) throws IOException {
        String dir = System.getenv().getOrDefault("SKIFF_DATA_DIR", "");
        if (dir.isEmpty()) {
            return null;
        }
        List<BatchIds> out = new ArrayList<>();
        List<Path> logs;
        try (Stream<Path> s = Files.walk(Path.of(dir))) {
            logs = s.filter(p -> p.getFileName().toString().endsWith(".log")
                    && p.getParent().getFileName().toString().equals(topic + "-" + partition)).sorted().toList();
        }
        for (Path f : logs) {
            ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(f));
            int pos = 0;
            while (pos + 61 <= b.limit()) {
                int len = b.getInt(pos + 8);
                if (b.get(pos + 16) != 2 || len < 49) {
                    break; // the preallocated or torn tail
                }
                out.add(new BatchIds(b.getLong(pos + 43), b.getInt(pos + 53)));
                pos += 12 + len;
            }
        }
        return out;
    }
}
