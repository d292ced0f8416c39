package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// saramaConfig: Sarama picks request versions from Config.Version rather than from the
// broker's ApiVersions, so this says which Kafka it talks to: the Kafka 4.1 the other clients
// of the suite come from.
func saramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_1_0_0
	cfg.ClientID = "skiff-compat-sarama"
	cfg.Net.DialTimeout = 10 * time.Second
	cfg.Net.ReadTimeout = 30 * time.Second
	cfg.Admin.Timeout = 30 * time.Second
	cfg.Metadata.Retry.Max = 20
	return cfg
}

func (c *check) saramaAdmin() sarama.ClusterAdmin {
	adm, err := sarama.NewClusterAdmin(c.bootstrap, saramaConfig())
	c.must(err, "NewClusterAdmin")
	return adm
}

// saramaCreate creates a topic and waits until Metadata shows a leader for every partition;
// returns the leaders.
func (c *check) saramaCreate(adm sarama.ClusterAdmin, topic string, partitions int32, configs map[string]*string) map[int32]int32 {
	c.must(adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs}, false), "CreateTopic "+topic)
	var leaders map[int32]int32
	c.waitFor(fmt.Sprintf("a leader for all %d partitions of %s", partitions, topic), func() bool {
		md, err := adm.DescribeTopics([]string{topic})
		if err != nil || len(md) != 1 || !errors.Is(md[0].Err, sarama.ErrNoError) || len(md[0].Partitions) != int(partitions) {
			return false
		}
		leaders = map[int32]int32{}
		for _, p := range md[0].Partitions {
			if p.Leader < 0 {
				return false
			}
			leaders[p.ID] = p.Leader
		}
		return true
	})
	return leaders
}

func saramaAdmin(c *check) {
	adm := c.saramaAdmin()
	defer adm.Close()
	topic := c.topic()

	c.setPhase("DescribeCluster")
	brokers, controller, err := adm.DescribeCluster()
	c.must(err, "DescribeCluster")
	if len(brokers) == 0 || controller < 0 {
		c.failf("DescribeCluster: %d brokers, controller %d", len(brokers), controller)
	}

	c.setPhase("CreateTopic (3 partitions, retention.ms)")
	ret := "3600000"
	c.saramaCreate(adm, topic, 3, map[string]*string{"retention.ms": &ret})

	c.setPhase("ListTopics")
	topics, err := adm.ListTopics()
	c.must(err, "ListTopics")
	d, ok := topics[topic]
	if !ok || d.NumPartitions != 3 || d.ConfigEntries["retention.ms"] == nil || *d.ConfigEntries["retention.ms"] != ret {
		c.failf("ListTopics: %s listed %v, detail %+v; expected 3 partitions and retention.ms=%s", topic, ok, d, ret)
	}

	c.setPhase("DescribeConfig")
	entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	c.must(err, "DescribeConfig")
	got := ""
	for _, e := range entries {
		if e.Name == "retention.ms" {
			got = fmt.Sprintf("%s %v", e.Value, e.Source)
		}
	}
	if got != fmt.Sprintf("%s %v", ret, sarama.SourceTopic) {
		c.failf("retention.ms is %q, expected \"%s %v\"", got, ret, sarama.SourceTopic)
	}

	c.setPhase("CreateTopic of an existing topic")
	err = adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false)
	if !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		c.failf("creating %s again gave %v, expected ErrTopicAlreadyExists", topic, err)
	}

	c.setPhase("DeleteTopic")
	c.must(adm.DeleteTopic(topic), "DeleteTopic")
	c.waitFor(topic+" gone from ListTopics", func() bool {
		topics, err := adm.ListTopics()
		_, still := topics[topic]
		return err == nil && !still
	})
}

func saramaProduce(c *check) {
	const partitions, n = 3, 30
	topic := c.topic()
	adm := c.saramaAdmin()
	defer adm.Close()
	c.saramaCreate(adm, topic, partitions, nil)

	c.setPhase("produce (idempotent, acks=all, keyed, with headers)")
	cfg := saramaConfig()
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Net.MaxOpenRequests = 1
	producer, err := sarama.NewSyncProducer(c.bootstrap, cfg)
	c.must(err, "NewSyncProducer")
	var sent []*sarama.ProducerMessage
	for i := 0; i < n; i++ {
		sent = append(sent, &sarama.ProducerMessage{
			Topic: topic,
			Key:   sarama.StringEncoder(fmt.Sprintf("key-%d", i%7)),
			Value: sarama.StringEncoder(fmt.Sprintf("value-%d", i)),
			Headers: []sarama.RecordHeader{
				{Key: []byte("index"), Value: []byte(fmt.Sprint(i))},
				{Key: []byte("client"), Value: []byte("sarama")},
			},
		})
	}
	c.must(producer.SendMessages(sent), "SendMessages")
	c.must(producer.Close(), "producer Close")
	keyPart := map[string]int32{}
	next := map[int32]int64{}
	for i, m := range sent {
		k := string(m.Key.(sarama.StringEncoder))
		if p, ok := keyPart[k]; ok && p != m.Partition {
			c.failf("key %s went to partitions %d and %d", k, p, m.Partition)
		}
		keyPart[k] = m.Partition
		if m.Offset != next[m.Partition] {
			c.failf("record %d acked at offset %d of partition %d, expected %d", i, m.Offset, m.Partition, next[m.Partition])
		}
		next[m.Partition]++
	}
	c.log("acked %d records, per partition %v", n, next)

	c.setPhase("read back (ConsumePartition from the oldest offset)")
	consumer, err := sarama.NewConsumer(c.bootstrap, saramaConfig())
	c.must(err, "NewConsumer")
	defer consumer.Close()
	got := map[string]string{}
	for p := int32(0); p < partitions; p++ {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		c.must(err, fmt.Sprintf("ConsumePartition %d", p))
		deadline := time.After(timeout)
		for int64(len(got)) < countBelow(next, p) {
			select {
			case m := <-pc.Messages():
				s := string(m.Key) + "=" + string(m.Value)
				for _, h := range m.Headers {
					s += " " + string(h.Key) + ":" + string(h.Value)
				}
				got[fmt.Sprintf("%d@%d", m.Partition, m.Offset)] = s
			case err := <-pc.Errors():
				c.failf("partition %d: %v", p, err)
			case <-deadline:
				c.failf("partition %d: read %d records within %s, expected %d", p, len(got)-int(countBelow(next, p-1)), timeout, next[p])
			}
		}
		c.must(pc.Close(), "PartitionConsumer Close")
	}
	for i, m := range sent {
		want := fmt.Sprintf("key-%d=value-%d index:%d client:sarama", i%7, i, i)
		if have := got[fmt.Sprintf("%d@%d", m.Partition, m.Offset)]; have != want {
			c.failf("record at partition %d offset %d reads back as [%s], sent [%s]", m.Partition, m.Offset, have, want)
		}
	}
	c.log("read back %d records with their keys, values and headers", n)
}

// countBelow is how many records partitions 0..p hold.
func countBelow(perPartition map[int32]int64, p int32) int64 {
	var n int64
	for q := int32(0); q <= p; q++ {
		n += perPartition[q]
	}
	return n
}

// saramaMember is a consumer-group member consuming on its own goroutine; it commits its marked
// offsets when its session ends.
type saramaMember struct {
	group    sarama.ConsumerGroup
	cancel   context.CancelFunc
	mu       sync.Mutex
	assigned int
	read     []string
	values   map[string]string
	err      error
	done     chan struct{}
}

func (m *saramaMember) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.assigned = 0
	for _, ps := range s.Claims() {
		m.assigned += len(ps)
	}
	return nil
}

func (m *saramaMember) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.assigned = 0
	return nil
}

func (m *saramaMember) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		id := fmt.Sprintf("p%d-%d", msg.Partition, msg.Offset)
		m.mu.Lock()
		m.read = append(m.read, id)
		m.values[id] = string(msg.Value)
		m.mu.Unlock()
		s.MarkMessage(msg, "")
	}
	return nil
}

func (m *saramaMember) setErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *saramaMember) count() (assigned, read int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assigned, len(m.read)
}

func (c *check) saramaJoin(group, topic string) *saramaMember {
	cfg := saramaConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Return.Errors = true
	g, err := sarama.NewConsumerGroup(c.bootstrap, group, cfg)
	c.must(err, "NewConsumerGroup")
	ctx, cancel := context.WithCancel(context.Background())
	m := &saramaMember{group: g, cancel: cancel, values: map[string]string{}, done: make(chan struct{})}
	go func() {
		for err := range g.Errors() {
			m.setErr(err)
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, m); err != nil && ctx.Err() == nil {
				m.setErr(fmt.Errorf("Consume: %w", err))
				return
			}
		}
	}()
	return m
}

// saramaStop ends the member's session (committing what it read), closes it (leaving the
// group), and fails on any error it met.
func (c *check) saramaStop(name string, m *saramaMember) {
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(timeout):
		c.failf("%s did not end its session", name)
	}
	c.must(m.group.Close(), name+": Close")
	if m.err != nil {
		c.failf("%s: %v", name, m.err)
	}
}

func (c *check) saramaOffsets(adm sarama.ClusterAdmin, client sarama.Client, group, topic string) (committed, ends map[int32]int64) {
	parts := make([]int32, groupPartitions)
	for p := range parts {
		parts[p] = int32(p)
	}
	resp, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	c.must(err, "ListConsumerGroupOffsets")
	committed, ends = map[int32]int64{}, map[int32]int64{}
	for p, b := range resp.Blocks[topic] {
		if !errors.Is(b.Err, sarama.ErrNoError) {
			c.failf("ListConsumerGroupOffsets: partition %d: %v", p, b.Err)
		}
		if b.Offset >= 0 {
			committed[p] = b.Offset
		}
	}
	for _, p := range parts {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		c.must(err, fmt.Sprintf("GetOffset newest of partition %d", p))
		ends[p] = end
	}
	return committed, ends
}

func saramaGroup(c *check) {
	topic := c.topic()
	group := topic + "-group"
	adm := c.saramaAdmin()
	defer adm.Close()
	leaders := c.saramaCreate(adm, topic, groupPartitions, nil)
	brokers, _, err := adm.DescribeCluster()
	c.must(err, "DescribeCluster")
	c.checkLeaderSpread(len(brokers), leaders)

	cfg := saramaConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	client, err := sarama.NewClient(c.bootstrap, cfg)
	c.must(err, "NewClient")
	defer client.Close()
	producer, err := sarama.NewSyncProducerFromClient(client)
	c.must(err, "NewSyncProducerFromClient")
	produce := func(per int, from map[int32]int64) {
		var msgs []*sarama.ProducerMessage
		for p := int32(0); p < groupPartitions; p++ {
			for i := 0; i < per; i++ {
				msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.StringEncoder(fmt.Sprintf("p%d-%d", p, from[p]+int64(i)))})
			}
		}
		c.must(producer.SendMessages(msgs), "SendMessages")
	}

	c.setPhase("two members join and split the 6 partitions")
	a, b := c.saramaJoin(group, topic), c.saramaJoin(group, topic)
	c.waitFor("both members assigned, all 6 partitions between them", func() bool {
		na, _ := a.count()
		nb, _ := b.count()
		return na > 0 && nb > 0 && na+nb == groupPartitions
	})

	c.setPhase("produce 10 records per partition; the members read them")
	produce(10, map[int32]int64{})
	c.waitFor("the members reading 60 records", func() bool {
		_, ra := a.count()
		_, rb := b.count()
		return ra+rb >= 60
	})
	c.saramaStop("member a", a)
	c.saramaStop("member b", b)
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
	committed, ends := c.saramaOffsets(adm, client, group, topic)
	c.checkRead("two members", append(append([]string{}, a.read...), b.read...), values, map[int32]int64{}, ends)

	c.setPhase("committed offsets after two members")
	c.compareCommitted("after two members", committed, ends, leaders)

	c.setPhase("a new member resumes from the committed offsets")
	produce(2, ends)
	d := c.saramaJoin(group, topic)
	c.waitFor("the new member reading 12 records", func() bool { _, r := d.count(); return r >= 12 })
	time.Sleep(time.Second) // anything read beyond the 12 records is a failure below
	c.saramaStop("resumed member", d)
	committed, newEnds := c.saramaOffsets(adm, client, group, topic)
	c.checkRead("resumed member", d.read, d.values, ends, newEnds)

	c.setPhase("committed offsets after the resumed member")
	c.compareCommitted("after the resumed member", committed, newEnds, leaders)
	c.must(producer.Close(), "producer Close")
}
