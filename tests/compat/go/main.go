// Command compat-go runs the Go-client checks of the compatibility suite (tests/compat):
// franz-go (kgo + kadm) and Sarama.
//
//	compat-go --step NAME [--bootstrap H:P,...]
//	compat-go --list
//
// A failing step ends with the line "FAILED: <phase>: <reason>", which run.sh shows on its FAIL
// line; the phase says which part of the check failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// groupPartitions is the partition count of a group check's topic: leaders placed round-robin
// land on all three brokers of the cluster, so most are led by a broker that does not coordinate.
const groupPartitions = 6

// timeout bounds every wait: generous, since CI's 2 cores run other builds at the same time.
const timeout = 60 * time.Second

// check is one step's context: its name (for topic names) and its current phase.
type check struct {
	name      string
	bootstrap []string
	phase     string
}

// failure is a verification that did not hold; a step panics with it.
type failure struct{ msg string }

func (c *check) setPhase(p string) {
	c.phase = p
	c.log("-- %s", p)
}

func (c *check) log(format string, args ...any) {
	fmt.Printf("  .. "+format+"\n", args...)
}

func (c *check) failf(format string, args ...any) {
	panic(failure{fmt.Sprintf(format, args...)})
}

func (c *check) must(err error, what string) {
	if err != nil {
		c.failf("%s: %v", what, err)
	}
}

// topic is a topic name unique to this run and step.
func (c *check) topic() string {
	rid := os.Getenv("SKIFF_COMPAT_RUN_ID")
	if rid == "" {
		rid = "g" + strconv.Itoa(os.Getpid())
	}
	return strings.ReplaceAll("compat-"+rid+"-"+c.name, "_", "-")
}

// expectedBrokers is SKIFF_COMPAT_EXPECT_BROKERS (set by run.sh for the group checks), or 0.
func expectedBrokers() int {
	n, _ := strconv.Atoi(strings.TrimSpace(os.Getenv("SKIFF_COMPAT_EXPECT_BROKERS")))
	return n
}

// checkLeaderSpread fails unless the cluster has the brokers run.sh started and the topic's
// partition leaders are spread over them.
func (c *check) checkLeaderSpread(brokers int, leaders map[int32]int32) {
	c.log("cluster has %d broker(s); partition leaders %v", brokers, leaders)
	want := expectedBrokers()
	if want == 0 {
		return
	}
	if brokers != want {
		c.failf("Metadata lists %d broker(s), run.sh started %d", brokers, want)
	}
	spread := map[int32]bool{}
	for _, l := range leaders {
		spread[l] = true
	}
	if len(spread) < min(want, len(leaders)) {
		c.failf("partition leaders %v are not spread over the %d brokers", leaders, want)
	}
}

// compareCommitted fails naming every partition whose committed offset is not its end.
func (c *check) compareCommitted(what string, committed, ends map[int32]int64, leaders map[int32]int32) {
	var bad []string
	for _, p := range sortedKeys(ends) {
		got, ok := committed[p]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("partition %d (leader broker %d): nothing committed, end %d", p, leaders[p], ends[p]))
		case got != ends[p]:
			bad = append(bad, fmt.Sprintf("partition %d (leader broker %d): committed %d, end %d", p, leaders[p], got, ends[p]))
		}
	}
	if len(bad) > 0 {
		c.failf("%s: %d of %d partitions' committed offsets are not their ends: %s", what, len(bad), len(ends), strings.Join(bad, "; "))
	}
	c.log("%s: committed offset == end offset on all %d partitions: %v", what, len(ends), ends)
}

// checkRead fails unless read holds each "p<partition>-<offset>" from `from` to `to` exactly
// once; read maps each record read, named so, to its value.
func (c *check) checkRead(what string, read []string, values map[string]string, from, to map[int32]int64) {
	want := map[string]bool{}
	for p := int32(0); p < groupPartitions; p++ {
		for o := from[p]; o < to[p]; o++ {
			want[fmt.Sprintf("p%d-%d", p, o)] = true
		}
	}
	var missing, extra, wrong []string
	seen := map[string]bool{}
	for _, id := range read {
		if !want[id] || seen[id] {
			extra = append(extra, id)
		}
		seen[id] = true
		if values[id] != id {
			wrong = append(wrong, id+" has value "+values[id])
		}
	}
	for id := range want {
		if !seen[id] {
			missing = append(missing, id)
		}
	}
	if len(missing)+len(extra)+len(wrong) > 0 {
		sort.Strings(missing)
		c.failf("%s: read %d records, expected %d; missing %v, unexpected or repeated %v, wrong values %v",
			what, len(read), len(want), missing, extra, wrong)
	}
	c.log("%s: read exactly the %d records expected", what, len(want))
}

func sortedKeys[V any](m map[int32]V) []int32 {
	keys := make([]int32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// waitFor polls cond every 100 ms and fails after timeout.
func (c *check) waitFor(what string, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.failf("%s did not happen within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var steps = map[string]func(*check){
	"franz-go-admin":         franzAdmin,
	"franz-go-produce":       franzProduce,
	"franz-go-group-consume": franzGroup,
	"sarama-admin":           saramaAdmin,
	"sarama-produce":         saramaProduce,
	"sarama-group-consume":   saramaGroup,
}

func main() {
	bootstrap := flag.String("bootstrap", envOr("SKIFF_BOOTSTRAP", "127.0.0.1:19092"), "bootstrap servers")
	name := flag.String("step", "", "the step to run")
	list := flag.Bool("list", false, "list the steps")
	flag.Parse()
	if *list {
		names := make([]string, 0, len(steps))
		for n := range steps {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Println(strings.Join(names, "\n"))
		return
	}
	run, ok := steps[*name]
	if !ok {
		fmt.Printf("FAILED: unknown step %q\n", *name)
		os.Exit(2)
	}
	c := &check{name: *name, bootstrap: strings.Split(*bootstrap, ","), phase: "setup"}
	c.log("step %s against %s", *name, *bootstrap)
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(failure); ok {
				fmt.Printf("FAILED: %s: %s\n", c.phase, f.msg)
			} else {
				fmt.Printf("FAILED: %s: panic: %v\n", c.phase, r)
			}
			os.Exit(1)
		}
		c.log("ok")
	}()
	run(c)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
