package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func (c *check) franzClient(opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.bootstrap...), kgo.RequestTimeoutOverhead(30 * time.Second)}, opts...)...)
	c.must(err, "kgo.NewClient")
	return cl
}

func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), timeout)
}

// franzCreate creates a topic and waits until Metadata shows a leader for every partition;
// returns the leaders.
func (c *check) franzCreate(adm *kadm.Client, topic string, partitions int32, configs map[string]*string) map[int32]int32 {
	ctx, cancel := ctxTimeout()
	defer cancel()
	resp, err := adm.CreateTopics(ctx, partitions, 1, configs, topic)
	c.must(err, "CreateTopics")
	c.must(resp.Error(), "CreateTopics "+topic)
	var leaders map[int32]int32
	c.waitFor(fmt.Sprintf("a leader for all %d partitions of %s", partitions, topic), func() bool {
		td, err := adm.ListTopics(ctx, topic)
		if err != nil || td.Error() != nil || len(td[topic].Partitions) != int(partitions) {
			return false
		}
		leaders = map[int32]int32{}
		for p, d := range td[topic].Partitions {
			if d.Leader < 0 || d.Err != nil {
				return false
			}
			leaders[p] = d.Leader
		}
		return true
	})
	return leaders
}

func franzAdmin(c *check) {
	cl := c.franzClient()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := ctxTimeout()
	defer cancel()
	topic := c.topic()

	c.setPhase("BrokerMetadata")
	md, err := adm.BrokerMetadata(ctx)
	c.must(err, "BrokerMetadata")
	if len(md.Brokers) == 0 || md.Controller < 0 || md.Cluster == "" {
		c.failf("metadata: brokers %v, controller %d, cluster %q", md.Brokers, md.Controller, md.Cluster)
	}

	c.setPhase("CreateTopics (3 partitions, retention.ms)")
	ret := "3600000"
	c.franzCreate(adm, topic, 3, map[string]*string{"retention.ms": &ret})

	c.setPhase("ListTopics")
	td, err := adm.ListTopics(ctx)
	c.must(err, "ListTopics")
	if !td.Has(topic) || len(td[topic].Partitions) != 3 {
		c.failf("ListTopics: %s listed %v with %d partitions, expected 3", topic, td.Has(topic), len(td[topic].Partitions))
	}

	c.setPhase("DescribeTopicConfigs")
	rc, err := adm.DescribeTopicConfigs(ctx, topic)
	c.must(err, "DescribeTopicConfigs")
	cfg, err := rc.On(topic, nil)
	c.must(err, "DescribeTopicConfigs "+topic)
	got := ""
	for _, e := range cfg.Configs {
		if e.Key == "retention.ms" {
			got = e.MaybeValue() + " " + e.Source.String()
		}
	}
	if got != "3600000 DYNAMIC_TOPIC_CONFIG" {
		c.failf("retention.ms is %q, expected \"3600000 DYNAMIC_TOPIC_CONFIG\"", got)
	}

	c.setPhase("CreateTopics of an existing topic")
	resp, err := adm.CreateTopics(ctx, 1, 1, nil, topic)
	c.must(err, "CreateTopics")
	if r := resp[topic]; r.Err == nil || !errors.Is(r.Err, kerr.TopicAlreadyExists) {
		c.failf("creating %s again gave %v, expected TOPIC_ALREADY_EXISTS", topic, r.Err)
	}

	c.setPhase("DeleteTopics")
	dr, err := adm.DeleteTopics(ctx, topic)
	c.must(err, "DeleteTopics")
	c.must(dr.Error(), "DeleteTopics "+topic)
	c.waitFor(topic+" gone from ListTopics", func() bool {
		td, err := adm.ListTopics(ctx)
		return err == nil && !td.Has(topic)
	})
}

func franzProduce(c *check) {
	const partitions, n = 3, 30
	topic := c.topic()
	cl := c.franzClient(kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	defer cl.Close()
	c.franzCreate(kadm.NewClient(cl), topic, partitions, nil)

	c.setPhase("produce (idempotent by default, acks=all, keyed, with headers)")
	ctx, cancel := ctxTimeout()
	defer cancel()
	var sent []*kgo.Record
	for i := 0; i < n; i++ {
		sent = append(sent, &kgo.Record{
			Key:     []byte(fmt.Sprintf("key-%d", i%7)),
			Value:   []byte(fmt.Sprintf("value-%d", i)),
			Headers: []kgo.RecordHeader{{Key: "index", Value: []byte(fmt.Sprint(i))}, {Key: "client", Value: []byte("franz-go")}},
		})
	}
	c.must(cl.ProduceSync(ctx, sent...).FirstErr(), "ProduceSync")
	c.checkAcked(sent)

	c.setPhase("read back (ConsumePartitions from the start)")
	offsets := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	cons := c.franzClient(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
	defer cons.Close()
	got := map[string]*kgo.Record{}
	for len(got) < n && ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				c.failf("fetch %s[%d]: %v", t, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { got[fmt.Sprintf("%d@%d", r.Partition, r.Offset)] = r })
	}
	for i, s := range sent {
		r := got[fmt.Sprintf("%d@%d", s.Partition, s.Offset)]
		if r == nil {
			c.failf("record %d acked at partition %d offset %d was not read back (read %d of %d)", i, s.Partition, s.Offset, len(got), n)
		}
		if want, have := describeRecord(s), describeRecord(r); want != have {
			c.failf("record at partition %d offset %d reads back as [%s], sent [%s]", s.Partition, s.Offset, have, want)
		}
	}
	c.log("read back %d records with their keys, values and headers", n)
}

func describeRecord(r *kgo.Record) string {
	s := string(r.Key) + "=" + string(r.Value)
	for _, h := range r.Headers {
		s += " " + h.Key + ":" + string(h.Value)
	}
	return s
}

// checkAcked fails unless every key went to one partition and each partition's offsets are
// dense, in send order.
func (c *check) checkAcked(sent []*kgo.Record) {
	keyPart := map[string]int32{}
	next := map[int32]int64{}
	for i, r := range sent {
		if p, ok := keyPart[string(r.Key)]; ok && p != r.Partition {
			c.failf("key %s went to partitions %d and %d", r.Key, p, r.Partition)
		}
		keyPart[string(r.Key)] = r.Partition
		if r.Offset != next[r.Partition] {
			c.failf("record %d acked at offset %d of partition %d, expected %d", i, r.Offset, r.Partition, next[r.Partition])
		}
		next[r.Partition]++
	}
	c.log("acked %d records, per partition %v", len(sent), next)
}

// franzMember is a group member polling on its own goroutine.
type franzMember struct {
	cl       *kgo.Client
	mu       sync.Mutex
	assigned map[int32]bool
	read     []string
	values   map[string]string
	err      error
	stop     chan struct{}
	done     chan struct{}
}

func (c *check) franzJoin(group, topic string) *franzMember {
	m := &franzMember{assigned: map[int32]bool{}, values: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	m.cl = c.franzClient(kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range a[topic] {
				m.assigned[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range r[topic] {
				delete(m.assigned, p)
			}
		}))
	go m.run()
	return m
}

func (m *franzMember) run() {
	defer close(m.done)
	for {
		select {
		case <-m.stop:
			ctx, cancel := ctxTimeout()
			defer cancel()
			if err := m.cl.CommitUncommittedOffsets(ctx); err != nil {
				m.setErr(fmt.Errorf("CommitUncommittedOffsets: %w", err))
			}
			m.cl.LeaveGroupContext(ctx)
			m.cl.Close()
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := m.cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				m.setErr(fmt.Errorf("fetch %s[%d]: %w", t, p, err))
			}
		})
		m.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			id := fmt.Sprintf("p%d-%d", r.Partition, r.Offset)
			m.read = append(m.read, id)
			m.values[id] = string(r.Value)
		})
		m.mu.Unlock()
	}
}

func (m *franzMember) setErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *franzMember) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.assigned)
}

func (m *franzMember) count() (assigned, read int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.assigned), len(m.read)
}

// stopAndCommit commits what the member read, leaves the group, and fails on any error it met.
func (c *check) franzStop(name string, m *franzMember) {
	close(m.stop)
	select {
	case <-m.done:
	case <-time.After(timeout + 30*time.Second):
		c.failf("%s did not commit and leave", name)
	}
	if m.err != nil {
		c.failf("%s: %v", name, m.err)
	}
}

// franzProduceGroup produces `per` records to every partition, values "p<partition>-<offset>".
func (c *check) franzProduceGroup(cl *kgo.Client, topic string, per int, from map[int32]int64) {
	ctx, cancel := ctxTimeout()
	defer cancel()
	var recs []*kgo.Record
	for p := int32(0); p < groupPartitions; p++ {
		for i := 0; i < per; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprintf("p%d-%d", p, from[p]+int64(i)))})
		}
	}
	c.must(cl.ProduceSync(ctx, recs...).FirstErr(), "ProduceSync")
}

func (c *check) franzOffsets(adm *kadm.Client, group, topic string) (committed, ends map[int32]int64) {
	ctx, cancel := ctxTimeout()
	defer cancel()
	fo, err := adm.FetchOffsets(ctx, group)
	c.must(err, "FetchOffsets")
	c.must(fo.Error(), "FetchOffsets")
	committed = map[int32]int64{}
	for p, o := range fo[topic] {
		if o.At >= 0 {
			committed[p] = o.At
		}
	}
	lo, err := adm.ListEndOffsets(ctx, topic)
	c.must(err, "ListEndOffsets")
	c.must(lo.Error(), "ListEndOffsets")
	ends = map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	return committed, ends
}

func franzGroup(c *check) {
	topic := c.topic()
	group := topic + "-group"
	// Record.Partition is honoured only with the manual partitioner
	cl := c.franzClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	adm := kadm.NewClient(cl)
	leaders := c.franzCreate(adm, topic, groupPartitions, nil)
	ctx, cancel := ctxTimeout()
	defer cancel()
	md, err := adm.BrokerMetadata(ctx)
	c.must(err, "BrokerMetadata")
	c.checkLeaderSpread(len(md.Brokers), leaders)

	c.setPhase("two members join and split the 6 partitions")
	a, b := c.franzJoin(group, topic), c.franzJoin(group, topic)
	c.waitFor("both members assigned, all 6 partitions between them", func() bool {
		na, _ := a.count()
		nb, _ := b.count()
		return na > 0 && nb > 0 && na+nb == groupPartitions
	})
	c.log("member a: partitions %v, member b: %v", a.partitions(), b.partitions())

	c.setPhase("produce 10 records per partition; the members read them")
	c.franzProduceGroup(cl, topic, 10, map[int32]int64{})
	c.waitFor("the members reading 60 records", func() bool {
		_, ra := a.count()
		_, rb := b.count()
		return ra+rb >= 60
	})
	c.franzStop("member a", a)
	c.franzStop("member b", b)
	if len(a.read) == 0 || len(b.read) == 0 {
		c.failf("member a read %d, member b %d: each should read some", len(a.read), len(b.read))
	}
	values := map[string]string{}
	for k, v := range a.values {
		values[k] = v
	}
	for k, v := range b.values {
		values[k] = v
	}
	committed, ends := c.franzOffsets(adm, group, topic)
	c.checkRead("two members", append(append([]string{}, a.read...), b.read...), values, map[int32]int64{}, ends)

	c.setPhase("committed offsets after two members")
	c.compareCommitted("after two members", committed, ends, leaders)

	c.setPhase("a new member resumes from the committed offsets")
	c.franzProduceGroup(cl, topic, 2, ends)
	d := c.franzJoin(group, topic)
	c.waitFor("the new member reading 12 records", func() bool { _, r := d.count(); return r >= 12 })
	time.Sleep(time.Second) // anything read beyond the 12 records is a failure below
	c.franzStop("resumed member", d)
	committed, newEnds := c.franzOffsets(adm, group, topic)
	c.checkRead("resumed member", d.read, d.values, ends, newEnds)

	c.setPhase("committed offsets after the resumed member")
	c.compareCommitted("after the resumed member", committed, newEnds, leaders)
}
