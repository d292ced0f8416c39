#!/usr/bin/env node
// kafkajs 2.2.4 compatibility checks for Skiff.
//
//   node kafkajs_check.js --bootstrap 127.0.0.1:19092 --step kafkajs-admin
//   node kafkajs_check.js --list
//
// kafkajs has no group-less consumer, so what kafkajs produces is read back by
// the confluent-kafka consumer (check_confluent.py --verify-jsonl, assign()),
// compared byte for byte. The group step is kafkajs-group-consume.
'use strict'

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawnSync } = require('child_process')
const { Kafka, CompressionTypes, ConfigResourceTypes, logLevel } = require('kafkajs')

class CheckFailed extends Error {}
const fail = (msg) => { throw new CheckFailed(msg) }
const check = (cond, msg) => { if (!cond) fail(msg) }
const log = (msg) => console.log('  .. ' + msg)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const args = process.argv.slice(2)
const arg = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const BOOTSTRAP = arg('--bootstrap', process.env.SKIFF_BOOTSTRAP || '127.0.0.1:19092')
const RUN_ID = process.env.SKIFF_COMPAT_RUN_ID || `${Math.floor(Date.now() / 1000)}-${process.pid}`
// partitions of the group step's topic: on a 3-broker cluster, leaders on every broker
const GROUP_PARTITIONS = 6
const topicName = (step, suffix) => `compat-${RUN_ID}-${step}${suffix ? '-' + suffix : ''}`

function kafka (clientId) {
  return new Kafka({
    clientId: clientId || 'skiff-compat-kafkajs',
    brokers: BOOTSTRAP.split(',').map((b) => b.trim()).filter(Boolean),
    connectionTimeout: 5000,
    requestTimeout: 30000,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
    logLevel: process.env.SKIFF_COMPAT_DEBUG ? logLevel.DEBUG : logLevel.WARN
  })
}

async function phase (name, fn) {
  try {
    return await fn()
  } catch (e) {
    if (e instanceof CheckFailed) throw new CheckFailed(`${name}: ${e.message}`)
    const extra = [e.type && `type=${e.type}`, e.code !== undefined && `code=${e.code}`, e.retriable !== undefined && `retriable=${e.retriable}`]
      .filter(Boolean).join(' ')
    throw new CheckFailed(`${name}: ${e.name}: ${e.message}${extra ? ' (' + extra + ')' : ''}`)
  }
}

async function waitUntil (fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
      last = v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs / 1000}s waiting for ${what} (last: ${last && last.message ? last.message : JSON.stringify(last)})`)
    await sleep(250)
  }
}

async function createTopic (admin, topic, numPartitions, configEntries) {
  const created = await phase('createTopics', () => admin.createTopics({
    topics: [{ topic, numPartitions, replicationFactor: 1, configEntries: configEntries || [] }],
    waitForLeaders: true,
    timeout: 30000
  }))
  check(created === true, `createTopics(${topic}) returned ${created} (false means it already existed)`)
  await phase('fetchTopicMetadata after create', () => waitUntil(async () => {
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    return md.topics.length === 1 && md.topics[0].partitions.length === numPartitions
  }, 20000, `metadata for ${topic} with ${numPartitions} partitions`))
  log(`created ${topic} with ${numPartitions} partitions`)
}

// ---- messages -----------------------------------------------------------------

function makeMessages (n, partitions, baseTs, tag) {
  const msgs = []
  for (let i = 0; i < n; i++) {
    const key = i % 50 === 7 ? null : Buffer.concat([Buffer.from(`key-${i}`), Buffer.from([0, 255])])
    let value = Buffer.from(`kafkajs ${tag} message ${i}; `.repeat(1 + (i % 30)))
    if (i % 50 === 13) value = null
    else if (i % 50 === 21) value = Buffer.alloc(0)
    const headers = i % 4 === 0
      ? {}
      : { seq: Buffer.from(String(i)), dup: [Buffer.from('a'), Buffer.from('b')], bin: Buffer.from([0, 255, i % 256]) }
    msgs.push({ i, key, value, headers, timestamp: String(baseTs + i * 10), partition: i % partitions })
  }
  return msgs
}

function headerList (h) {
  const out = []
  for (const [k, v] of Object.entries(h)) {
    for (const x of Array.isArray(v) ? v : [v]) out.push([k, x.toString('base64')])
  }
  return out
}

async function produce (producer, topic, msgs, compression, acks) {
  for (let start = 0; start < msgs.length; start += 100) {
    const chunk = msgs.slice(start, start + 100)
    const res = await phase(`producer.send(messages ${start}..${start + chunk.length - 1})`, () => producer.send({
      topic,
      compression,
      acks: acks === undefined ? -1 : acks,
      timeout: 30000,
      messages: chunk.map((m) => ({ key: m.key, value: m.value, headers: m.headers, timestamp: m.timestamp, partition: m.partition }))
    }))
    const base = {}
    for (const r of res) {
      check(r.errorCode === 0, `send: partition ${r.partition} errorCode ${r.errorCode}`)
      base[r.partition] = Number(r.baseOffset)
    }
    const seen = {}
    for (const m of chunk) {
      check(base[m.partition] !== undefined, `send: no RecordMetadata for partition ${m.partition}: ${JSON.stringify(res)}`)
      seen[m.partition] = (seen[m.partition] || 0)
      m.offset = base[m.partition] + seen[m.partition]
      seen[m.partition]++
    }
  }
  log(`produced ${msgs.length} messages to ${topic}`)
}

function verifyWithConfluent (topic, msgs, codec) {
  const dir = fs.mkdtempSync(path.join(process.env.SKIFF_COMPAT_WORK || os.tmpdir(), 'kafkajs-'))
  const file = path.join(dir, `${topic}.jsonl`)
  fs.writeFileSync(file, msgs.map((m) => JSON.stringify({
    partition: m.partition,
    offset: m.offset,
    key: m.key === null ? null : m.key.toString('base64'),
    value: m.value === null ? null : m.value.toString('base64'),
    headers: headerList(m.headers),
    timestamp: m.timestamp,
    codec
  })).join('\n') + '\n')
  const py = process.env.SKIFF_COMPAT_PY || path.join(__dirname, '.venv', 'bin', 'python')
  const r = spawnSync(py, [path.join(__dirname, 'check_confluent.py'), '--bootstrap', BOOTSTRAP, '--verify-jsonl', file, '--topic', topic],
    { encoding: 'utf8', timeout: 90000 })
  const out = (r.stdout || '') + (r.stderr || '')
  process.stdout.write(out.split('\n').filter(Boolean).map((l) => '  | ' + l).join('\n') + '\n')
  if (r.status !== 0) {
    const m = out.split('\n').filter((l) => l.startsWith('FAILED: ')).pop()
    fail(m ? m.slice(8) : `verifier exited ${r.status} ${r.error || ''}`)
  }
  log('confluent-kafka consumer read back all messages identical')
}

// ---- steps --------------------------------------------------------------------

const STEPS = {}
const GROUP_STEPS = new Set()

STEPS['kafkajs-admin'] = async () => {
  const k = kafka()
  const admin = k.admin()
  await phase('admin.connect', () => admin.connect())
  try {
    const cluster = await phase('describeCluster', () => admin.describeCluster())
    log(`describeCluster: ${JSON.stringify(cluster)}`)
    check(cluster.brokers.length >= 1, 'describeCluster: no brokers')
    check(cluster.brokers.some((b) => b.nodeId === cluster.controller), `describeCluster: controller ${cluster.controller} is not a listed broker`)

    const topic = topicName('kafkajs-admin')
    await createTopic(admin, topic, 3)
    const again = await phase('createTopics (existing)', () => admin.createTopics({ topics: [{ topic, numPartitions: 3 }], timeout: 30000 }))
    check(again === false, `createTopics of an existing topic returned ${again}, expected false`)

    const names = await phase('listTopics', () => admin.listTopics())
    check(names.includes(topic), `listTopics: ${topic} missing from ${JSON.stringify(names)}`)

    const md = await phase('fetchTopicMetadata', () => admin.fetchTopicMetadata({ topics: [topic] }))
    const parts = md.topics[0].partitions
    check(parts.length === 3, `fetchTopicMetadata: ${parts.length} partitions`)
    for (const p of parts) {
      check(p.partitionErrorCode === 0 && p.leader >= 0, `fetchTopicMetadata: partition ${JSON.stringify(p)}`)
    }

    let offs = await phase('fetchTopicOffsets (empty)', () => admin.fetchTopicOffsets(topic))
    check(offs.length === 3 && offs.every((o) => o.low === '0' && o.high === '0' && o.offset === '0'),
      `fetchTopicOffsets of an empty topic: ${JSON.stringify(offs)}`)

    // 20 messages per partition, timestamps base + i s
    const base = Date.now() - 300000
    const producer = k.producer({ allowAutoTopicCreation: false })
    await phase('producer.connect', () => producer.connect())
    const msgs = []
    for (let i = 0; i < 60; i++) msgs.push({ i, key: Buffer.from(`k${i}`), value: Buffer.from(`v${i}`), headers: {}, timestamp: String(base + Math.floor(i / 3) * 1000), partition: i % 3 })
    try {
      for (let i = 0; i < 60; i += 15) await produce(producer, topic, msgs.slice(i, i + 15), CompressionTypes.None)
    } finally {
      await producer.disconnect()
    }

    offs = await phase('fetchTopicOffsets', () => admin.fetchTopicOffsets(topic))
    offs.sort((a, b) => a.partition - b.partition)
    check(offs.length === 3 && offs.every((o) => o.high === '20' && o.low === '0' && o.offset === '20'),
      `fetchTopicOffsets after 20 messages per partition: ${JSON.stringify(offs)}`)

    const cases = [[base + 5000, '5'], [base + 4500, '5'], [base - 1000, '0'], [base + 19000, '19'], [base + 60000, '20']]
    for (const [ts, want] of cases) {
      const r = await phase('fetchTopicOffsetsByTimestamp', () => admin.fetchTopicOffsetsByTimestamp(topic, ts))
      check(r.length === 3 && r.every((o) => o.offset === want),
        `fetchTopicOffsetsByTimestamp(base${ts - base >= 0 ? '+' : ''}${ts - base} ms) = ${JSON.stringify(r)}, expected offset ${want} on each partition`)
    }
    log(`fetchTopicOffsetsByTimestamp: ${cases.length} cases ok`)

    await phase('deleteTopics', () => admin.deleteTopics({ topics: [topic], timeout: 30000 }))
    await phase('listTopics after delete', () => waitUntil(async () => !(await admin.listTopics()).includes(topic), 15000, `listTopics to stop showing ${topic}`))
  } finally {
    await admin.disconnect()
  }
}

STEPS['kafkajs-admin-configs'] = async () => {
  const admin = kafka().admin()
  await phase('admin.connect', () => admin.connect())
  try {
    const topic = topicName('kafkajs-admin-configs')
    await createTopic(admin, topic, 2, [{ name: 'retention.ms', value: '7200000' }])
    const describe = async () => {
      const r = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false })
      check(r.resources.length === 1 && r.resources[0].errorCode === 0, `describeConfigs: ${JSON.stringify(r.resources)}`)
      const e = r.resources[0].configEntries.find((c) => c.configName === 'retention.ms')
      check(e, `describeConfigs: no retention.ms among ${r.resources[0].configEntries.map((c) => c.configName)}`)
      return e.configValue
    }
    const v0 = await phase('describeConfigs', describe)
    check(v0 === '7200000', `describeConfigs after createTopics with retention.ms=7200000: ${v0}`)
    await phase('alterConfigs', () => admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '3600003' }] }]
    }))
    await phase('describeConfigs after alterConfigs', () => waitUntil(async () => (await describe()) === '3600003', 10000, 'retention.ms=3600003'))

    await phase('createPartitions', () => admin.createPartitions({ topicPartitions: [{ topic, count: 4 }], timeout: 30000 }))
    await phase('fetchTopicMetadata after createPartitions', () => waitUntil(async () => {
      const md = await admin.fetchTopicMetadata({ topics: [topic] })
      return md.topics[0].partitions.length === 4
    }, 20000, `${topic} to have 4 partitions`))
    await admin.deleteTopics({ topics: [topic], timeout: 30000 })
  } finally {
    await admin.disconnect()
  }
}

function produceStep (codecName, compression, producerOpts) {
  return async () => {
    const step = `kafkajs-produce-${codecName}`
    const k = kafka()
    const admin = k.admin()
    await phase('admin.connect', () => admin.connect())
    const topic = topicName(step)
    try {
      await createTopic(admin, topic, 3)
    } finally {
      await admin.disconnect()
    }
    const producer = k.producer({ allowAutoTopicCreation: false, ...producerOpts })
    await phase('producer.connect', () => producer.connect())
    const msgs = makeMessages(500, 3, Date.now() - 1000000, codecName)
    try {
      await produce(producer, topic, msgs, compression)
    } finally {
      await producer.disconnect()
    }
    verifyWithConfluent(topic, msgs, compression === CompressionTypes.GZIP ? 'gzip' : 'none')
  }
}

STEPS['kafkajs-produce-none'] = produceStep('none', CompressionTypes.None, {})
STEPS['kafkajs-produce-gzip'] = produceStep('gzip', CompressionTypes.GZIP, {})
STEPS['kafkajs-produce-idempotent'] = produceStep('idempotent', CompressionTypes.GZIP, { idempotent: true, maxInFlightRequests: 1 })

// `members` consumers in groupId subscribe to topic. With more than one, waits until their
// assignments split all `partitions` between them, then calls beforeConsume() (e.g. to
// produce, so nothing is re-read in a rebalance) and fails unless each member reads some.
// Reads `want` messages, waits settleMs for extra (re-read) ones, then every member commits
// the offsets after what it read. Returns { got, commitErrors }.
async function consumeGroup (k, topic, groupId, want, settleMs, opts) {
  const { members = 1, partitions, beforeConsume } = opts || {}
  const consumers = []
  const got = []
  const perMember = []
  const assigned = []
  const crashed = []
  const commitErrors = []
  try {
    for (let i = 0; i < members; i++) {
      const consumer = k.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 100, rebalanceTimeout: 20000 })
      consumers.push(consumer)
      perMember.push([])
      assigned.push(null)
      consumer.on(consumer.events.CRASH, (e) => crashed.push(`member ${i + 1}: ${e.payload.error}`))
      consumer.on(consumer.events.GROUP_JOIN, (e) => { assigned[i] = (e.payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b) })
      await phase(`consumer.connect (member ${i + 1})`, () => consumer.connect())
      await phase(`consumer.subscribe (member ${i + 1})`, () => consumer.subscribe({ topics: [topic], fromBeginning: true }))
      await phase(`consumer.run (member ${i + 1})`, () => consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          got.push({ partition, message })
          perMember[i].push({ partition, message })
        }
      }))
    }
    if (members > 1) {
      await phase('group join', () => waitUntil(async () => {
        if (crashed.length) fail(`consumer crashed: ${crashed[0]}`)
        const flat = assigned.flatMap((a) => a || []).sort((a, b) => a - b)
        return assigned.every((a) => a && a.length) && JSON.stringify(flat) === JSON.stringify([...Array(partitions).keys()])
      }, 30000, `${members} members to split the ${partitions} partitions between them (assignments ${JSON.stringify(assigned)})`))
      log(`${members} members joined; assignments ${JSON.stringify(assigned)}`)
    }
    if (beforeConsume) await beforeConsume()
    await phase('consume', () => waitUntil(async () => {
      if (crashed.length) fail(`consumer crashed: ${crashed[0]}`)
      return got.length >= want
    }, 60000, `${want} messages (have ${got.length})`))
    await sleep(settleMs)
    for (let i = 0; i < members; i++) {
      const next = {}
      for (const { partition, message } of perMember[i]) next[partition] = Math.max(next[partition] || 0, Number(message.offset) + 1)
      const counts = {}
      for (const { partition } of perMember[i]) counts[partition] = (counts[partition] || 0) + 1
      log(`group member ${i + 1} read ${perMember[i].length} messages: per partition ${JSON.stringify(counts)}`)
      if (!perMember[i].length) continue
      try {
        await phase(`consumer.commitOffsets (member ${i + 1})`, () => consumers[i].commitOffsets(
          Object.entries(next).map(([partition, offset]) => ({ topic, partition: Number(partition), offset: String(offset) }))))
      } catch (e) {
        log(`group member ${i + 1}: ${e.message}`)
        commitErrors.push(e.message)
      }
    }
  } finally {
    for (const c of consumers) await c.disconnect()
  }
  if (members > 1) {
    const idle = perMember.map((m, i) => m.length ? 0 : i + 1).filter(Boolean)
    check(!idle.length, `group consume: members ${idle} read no messages (of ${got.length})`)
  }
  return { got, commitErrors }
}

// Fails naming every partition whose committed offset (admin.fetchOffsets) is not its end
// (admin.fetchTopicOffsets high), or whose end is not what was produced to it (wantEnds).
async function verifyCommitted (k, topic, groupId, partitions, what, wantEnds) {
  const admin = k.admin()
  await phase(`${what}: admin.connect`, () => admin.connect())
  try {
    const ends = {}
    for (const o of await phase(`${what}: fetchTopicOffsets`, () => admin.fetchTopicOffsets(topic))) ends[o.partition] = Number(o.high)
    for (let p = 0; p < partitions; p++) {
      check(ends[p] === wantEnds[p], `${what}: partition ${p} high watermark ${ends[p]}, but ${wantEnds[p]} messages were produced to it`)
    }
    const leaders = {}
    const md = await phase(`${what}: fetchTopicMetadata`, () => admin.fetchTopicMetadata({ topics: [topic] }))
    for (const p of md.topics[0].partitions) leaders[p.partitionId] = p.leader
    const fetched = await phase(`${what}: fetchOffsets`, () => admin.fetchOffsets({ groupId, topics: [topic] }))
    log(`${what}: admin.fetchOffsets: ${JSON.stringify(fetched)}`)
    const committed = {}
    for (const t of fetched) {
      if (t.topic !== topic) continue
      for (const p of t.partitions) committed[p.partition] = Number(p.offset) >= 0 ? Number(p.offset) : null
    }
    const bad = []
    for (let p = 0; p < partitions; p++) {
      const c = committed[p] === undefined ? null : committed[p]
      if (c !== ends[p]) bad.push(`partition ${p} (leader broker ${leaders[p]}): ${c === null ? 'nothing committed' : 'committed ' + c}, end ${ends[p]}`)
    }
    check(!bad.length, `${what}: ${bad.length} of ${partitions} partitions' committed offsets are not their ends: ${bad.join('; ')}`)
    log(`${what}: committed offset == end offset on all ${partitions} partitions: ${JSON.stringify(ends)}`)
  } finally {
    await admin.disconnect()
  }
}

// Logs where the topic's partitions are led; with SKIFF_COMPAT_EXPECT_BROKERS (run.sh's
// cluster) fails unless the cluster has that many brokers and the leaders are spread over them.
async function checkLeaderSpread (admin, topic) {
  const cluster = await phase('describeCluster', () => admin.describeCluster())
  const brokers = cluster.brokers.map((b) => b.nodeId).sort()
  const md = await phase('fetchTopicMetadata', () => admin.fetchTopicMetadata({ topics: [topic] }))
  const leaders = {}
  for (const p of md.topics[0].partitions) leaders[p.partitionId] = p.leader
  log(`metadata: brokers ${JSON.stringify(brokers)}; ${topic} partition leaders ${JSON.stringify(leaders)}`)
  const want = process.env.SKIFF_COMPAT_EXPECT_BROKERS ? Number(process.env.SKIFF_COMPAT_EXPECT_BROKERS) : null
  if (want === null) return
  check(brokers.length === want, `setup: Metadata lists ${brokers.length} broker(s) ${JSON.stringify(brokers)}, run.sh started a ${want}-broker cluster`)
  const spread = new Set(Object.values(leaders))
  const need = Math.min(want, Object.keys(leaders).length)
  check(spread.size >= need && [...spread].every((l) => brokers.includes(l)),
    `setup: ${topic}'s partition leaders ${JSON.stringify(leaders)} are not spread over ${need} brokers ${JSON.stringify(brokers)}`)
}

function producedEnds (msgs, partitions) {
  const ends = {}
  for (let p = 0; p < partitions; p++) ends[p] = 0
  for (const m of msgs) ends[m.partition] = Math.max(ends[m.partition], m.offset + 1)
  return ends
}

function compareConsumed (msgs, got) {
  check(got.length === msgs.length, `consumed ${got.length} messages, expected ${msgs.length}`)
  const byOff = new Map(got.map((g) => [`${g.partition}@${g.message.offset}`, g.message]))
  check(byOff.size === got.length, 'some offsets were consumed twice')
  for (const m of msgs) {
    const g = byOff.get(`${m.partition}@${m.offset}`)
    check(g, `message ${m.i} (p${m.partition}@${m.offset}) not consumed`)
    const eq = (a, b) => (a === null || b === null) ? a === b : Buffer.compare(a, b) === 0
    check(eq(g.key, m.key), `message ${m.i}: key differs`)
    check(eq(g.value, m.value), `message ${m.i}: value differs`)
    check(g.timestamp === m.timestamp, `message ${m.i}: timestamp ${g.timestamp} != ${m.timestamp}`)
    check(JSON.stringify(headerList(g.headers || {})) === JSON.stringify(headerList(m.headers)), `message ${m.i}: headers differ`)
  }
}

STEPS['kafkajs-group-consume'] = async () => {
  const k = kafka()
  const admin = k.admin()
  const n = GROUP_PARTITIONS
  const topic = topicName('kafkajs-group-consume')
  const groupId = topicName('kafkajs-group-consume', 'group')
  await phase('admin.connect', () => admin.connect())
  try {
    await createTopic(admin, topic, n)
    await checkLeaderSpread(admin, topic)
  } finally {
    await admin.disconnect()
  }
  const producer = k.producer({ allowAutoTopicCreation: false })
  await phase('producer.connect', () => producer.connect())
  const msgs = makeMessages(500, n, Date.now() - 100000, 'group1')
  const more = makeMessages(100, n, Date.now(), 'group2')
  try {
    // two members at once; the messages are produced once they have split the partitions
    const first = await consumeGroup(k, topic, groupId, 500, 3000, {
      members: 2, partitions: n, beforeConsume: () => produce(producer, topic, msgs, CompressionTypes.GZIP)
    })
    await phase('two members', async () => compareConsumed(msgs, first.got))
    log('two members read all 500 between them and committed')
    await verifyCommitted(k, topic, groupId, n, 'commit by 2 members', producedEnds(msgs, n))
    check(!first.commitErrors.length, `commit by 2 members: ${first.commitErrors.join('; ')}`)
    await produce(producer, topic, more, CompressionTypes.None)
  } finally {
    await producer.disconnect()
  }
  const second = await consumeGroup(k, topic, groupId, 100, 3000)
  await phase('restarted consumer (resume from committed)', async () => compareConsumed(more, second.got))
  log('restarted consumer read exactly the 100 new messages')
  await verifyCommitted(k, topic, groupId, n, 'commit by the restarted consumer', producedEnds(msgs.concat(more), n))
  check(!second.commitErrors.length, `commit by the restarted consumer: ${second.commitErrors.join('; ')}`)
  const admin2 = k.admin()
  await admin2.connect()
  try {
    await admin2.deleteTopics({ topics: [topic] })
  } finally {
    await admin2.disconnect()
  }
}
GROUP_STEPS.add('kafkajs-group-consume')

// ---- failover: the leader of partition 0 is SIGKILLed while producing ---------------

const FAILOVER_PARTITIONS = 3
const FAILOVER_MIN_ISR = 2

// Asks run.sh (through $SKIFF_COMPAT_CTL, see compat_common.broker_ctl) to "kill" or
// "restart" broker brokerId; resolves to the words of its "ok ..." answer after "ok".
async function brokerCtl (action, brokerId, timeoutMs) {
  const ctl = process.env.SKIFF_COMPAT_CTL
  check(ctl && fs.existsSync(ctl), 'setup: SKIFF_COMPAT_CTL is not a directory: only run.sh can kill and restart its brokers (run this check through run.sh)')
  const seq = fs.readdirSync(ctl).filter((f) => f.endsWith('.req')).length + 1
  const tmp = path.join(ctl, `${seq}.tmp`)
  fs.writeFileSync(tmp, `${action} ${brokerId}\n`)
  fs.renameSync(tmp, path.join(ctl, `${seq}.req`))
  const resp = path.join(ctl, `${seq}.resp`)
  const deadline = Date.now() + timeoutMs
  while (!fs.existsSync(resp)) {
    if (Date.now() > deadline) fail(`${action} broker ${brokerId}: run.sh did not answer within ${timeoutMs / 1000}s`)
    await sleep(50)
  }
  const words = fs.readFileSync(resp, 'utf8').trim().split(/\s+/)
  check(words[0] === 'ok', `${action} broker ${brokerId}: run.sh: ${words.join(' ')}`)
  return words.slice(1)
}

// {brokers: [ids], parts: {partition: [leader, replicas, isr]}} from admin Metadata
// describeCluster asks for the Metadata of every topic, and kafkajs fails it when any partition
// has no leader: with a broker down, the other checks' replication-factor-1 topics on it have
// none (as with Kafka), so while a broker is down only the topic's own Metadata is asked for.
async function partitionView (admin, topic, { brokers = true } = {}) {
  const cluster = brokers ? await admin.describeCluster() : { brokers: [] }
  const md = await admin.fetchTopicMetadata({ topics: [topic] })
  const parts = {}
  for (const p of md.topics[0].partitions) parts[p.partitionId] = [p.leader, p.replicas.slice().sort(), p.isr.slice().sort()]
  return { brokers: cluster.brokers.map((b) => b.nodeId).sort(), parts }
}

STEPS['kafkajs-failover'] = async () => {
  const k = kafka()
  const admin = k.admin()
  const topic = topicName('kafkajs-failover')
  await phase('admin.connect', () => admin.connect())
  try {
    const created = await phase('createTopics', () => admin.createTopics({
      topics: [{ topic, numPartitions: FAILOVER_PARTITIONS, replicationFactor: 3, configEntries: [{ name: 'min.insync.replicas', value: String(FAILOVER_MIN_ISR) }] }],
      waitForLeaders: true,
      timeout: 30000
    }))
    check(created === true, `createTopics(${topic}) returned ${created}`)
    const view = await phase('setup', () => waitUntil(async () => {
      const v = await partitionView(admin, topic)
      const ps = Object.values(v.parts)
      return ps.length === FAILOVER_PARTITIONS && ps.every(([l, r, i]) => l >= 0 && r.length === 3 && i.length === 3) && v
    }, 20000, `${topic}: a leader and 3 in-sync replicas on every partition`))
    log(`created ${topic} (min.insync.replicas=${FAILOVER_MIN_ISR}): brokers ${JSON.stringify(view.brokers)}; partition: [leader, replicas, isr] ${JSON.stringify(view.parts)}`)

    // ---- produce through the kill
    const order = []
    const sentAt = {}
    const acks = {} // value -> [partition, offset, time]
    let killTime = null
    let victim = null
    let recoveredAt = null
    let killing = null
    let killError = null
    const producer = k.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      retry: { retries: 30, initialRetryTime: 100, maxRetryTime: 1000 }
    })
    await phase('producer.connect', () => producer.connect())
    const t0 = Date.now() / 1000
    try {
      // one partition per send (10 values, partitions in turn): a send() to several partitions
      // whose retry spans brokers goes wrong in kafkajs 2.2.4 (sendMessages.js keeps responses
      // per broker): it resends a batch whose first request is still waiting for acks=all with
      // new sequence numbers (stored twice), or skips a partition whose new leader already
      // answered for another one (resolves without its RecordMetadata); both seen here
      let i = 0
      for (let k = 0; ; k++) {
        const batch = []
        for (let n = 0; n < 10; n++, i++) {
          const v = `kafkajs-${String(i).padStart(6, '0')}`
          batch.push({ value: v, partition: k % FAILOVER_PARTITIONS })
          order.push(v)
          sentAt[v] = Date.now() / 1000
        }
        const res = await phase(`produce: producer.send(${batch[0].value}..${batch[batch.length - 1].value})`, () => producer.send({
          topic, acks: -1, timeout: 30000, messages: batch.map((m) => ({ value: m.value, partition: m.partition }))
        }))
        const now = Date.now() / 1000
        const base = {}
        for (const r of res) {
          check(r.errorCode === 0, `produce: partition ${r.partition} errorCode ${r.errorCode}`)
          base[r.partition] = Number(r.baseOffset)
        }
        const seen = {}
        for (const m of batch) {
          check(base[m.partition] !== undefined, `produce: producer.send resolved without RecordMetadata for partition ${m.partition} ` +
            `(${killTime === null ? 'no broker killed yet' : `${(now - killTime).toFixed(2)}s after the kill of broker ${victim}`}): ${JSON.stringify(res)}`)
          seen[m.partition] = seen[m.partition] || 0
          acks[m.value] = [m.partition, base[m.partition] + seen[m.partition]++, now]
          if (killTime !== null && m.partition === 0 && sentAt[m.value] > killTime && recoveredAt === null) recoveredAt = now
        }
        if (killError) throw killError
        const nAcked = Object.keys(acks).length
        if (killing === null && nAcked >= 100) {
          // run.sh kills partition 0's leader while the next sends go on
          killing = (async () => {
            const leader = (await partitionView(admin, topic)).parts[0][0]
            const words = await brokerCtl('kill', leader, 15000)
            victim = leader
            killTime = Number(words[2])
            log(`run.sh SIGKILLed broker ${leader} (pid ${words[1]}), the leader of ${topic} partition 0, after ${nAcked} values were acknowledged`)
          })()
          killing.catch((e) => { killError = e })
        } else if (killing === null && now - t0 > 20) {
          fail(`produce: only ${nAcked} of ${order.length} values acknowledged in 20 s, before any broker was killed`)
        }
        if (killTime !== null && recoveredAt !== null && now >= recoveredAt + 1) break
        if (killTime !== null && now - killTime > 60) {
          log('no record sent after the kill acknowledged on partition 0 within 60 s: stop sending')
          break
        }
        await sleep(50)
      }
      await phase('kill', () => killing)
    } finally {
      await producer.disconnect()
    }
    const sentAfter = order.filter((v) => sentAt[v] > killTime).length
    log(`sent ${order.length} values (${sentAfter} after the kill) in ${(Date.now() / 1000 - t0).toFixed(1)}s; all acknowledged (idempotent producer, acks=-1)`)
    const first = (pred) => {
      const ts = Object.entries(acks).filter(([v, [p, , t]]) => t > killTime && pred(v, p)).map(([, [, , t]]) => t)
      return ts.length ? `+${(Math.min(...ts) - killTime).toFixed(2)}s` : 'none'
    }
    const before = Object.values(acks).filter(([, , t]) => t <= killTime).length
    const info = `killed broker ${victim} (leader of partition 0); first ack after the kill ${first(() => true)}, ` +
      `of a record sent after it ${first((v) => sentAt[v] > killTime)}, on partition 0 (sent after it) ${first((v, p) => p === 0 && sentAt[v] > killTime)}; ` +
      `${before} of ${order.length} acks came before the kill`
    log(info)
    console.log('INFO: ' + info)
    const after = await phase('metadata after the kill', () => partitionView(admin, topic, { brokers: false }))
    log(`after the kill: partition: [leader, replicas, isr] ${JSON.stringify(after.parts)}`)

    // ---- restart, then read everything back
    const r0 = Date.now()
    const words = await phase('restart', () => brokerCtl('restart', victim, 75000))
    log(`run.sh restarted broker ${victim} (pid ${words[1]}) in ${((Date.now() - r0) / 1000).toFixed(1)}s; it is healthy and in every broker's Metadata`)
    const back = await phase('after the restart', () => waitUntil(async () => {
      const v = await partitionView(admin, topic)
      return v.brokers.length === 3 && v
    }, 30000, 'Metadata to list 3 brokers'))
    log(`after the restart: Metadata lists brokers ${JSON.stringify(back.brokers)}; partition: [leader, replicas, isr] ${JSON.stringify(back.parts)}`)
    const ends = {}
    for (const o of await phase('fetchTopicOffsets', () => admin.fetchTopicOffsets(topic))) ends[o.partition] = Number(o.high)

    // a consumer in a group of its own, from the beginning, until every partition's end
    const got = []
    const pos = {}
    let crashed = null
    const consumer = k.consumer({ groupId: topicName('kafkajs-failover', 'group'), sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 100 })
    // a retriable error (e.g. COORDINATOR_LOAD_IN_PROGRESS from a coordinator that just moved)
    // crashes the consumer, which restarts itself (payload.restart); only a final crash fails
    consumer.on(consumer.events.CRASH, (e) => {
      log(`consumer crashed${e.payload.restart ? ' (kafkajs restarts it)' : ''}: ${e.payload.error}`)
      if (!e.payload.restart) crashed = String(e.payload.error)
    })
    await phase('consumer.connect', () => consumer.connect())
    try {
      await phase('consumer.subscribe', () => consumer.subscribe({ topics: [topic], fromBeginning: true }))
      await phase('consumer.run', () => consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          got.push([message.value.toString(), partition, Number(message.offset)])
          pos[partition] = Number(message.offset)
        }
      }))
      const deadline = Date.now() + 60000
      while (!(got.length >= order.length && Object.keys(ends).every((p) => ends[p] === 0 || pos[p] + 1 >= ends[p]))) {
        check(!crashed, `consume: consumer crashed: ${crashed} (read ${got.length} records, positions ${JSON.stringify(pos)})`)
        check(Date.now() < deadline, `consume: read ${got.length} records in 60 s, positions ${JSON.stringify(pos)}, ends ${JSON.stringify(ends)}`)
        await sleep(100)
      }
    } finally {
      await consumer.disconnect()
    }
    // every acknowledged value exactly once, at its acknowledged offset
    const where = {}
    for (const [v, p, o] of got) (where[v] = where[v] || []).push([p, o])
    const foreign = Object.keys(where).filter((v) => !(v in sentAt))
    check(!foreign.length, `consume: ${foreign.length} values that were never sent, e.g. ${foreign.slice(0, 3)}`)
    const missing = order.filter((v) => !where[v])
    check(!missing.length, `consume: ${missing.length} of ${order.length} acknowledged values missing: ${missing.slice(0, 5).map((v) => `${v} (acknowledged at partition ${acks[v][0]} offset ${acks[v][1]})`).join(', ')}`)
    const moved = order.filter((v) => !where[v].some(([p, o]) => p === acks[v][0] && o === acks[v][1]))
    check(!moved.length, `consume: ${moved.length} acknowledged values not at the acknowledged offset: ${moved.slice(0, 5).map((v) => `${v} acknowledged at ${acks[v][0]}@${acks[v][1]}, read at ${JSON.stringify(where[v])}`).join('; ')}`)
    const dups = Object.entries(where).filter(([, ps]) => ps.length > 1)
    check(!dups.length, `consume: ${dups.length} values stored more than once despite the idempotent producer: ${JSON.stringify(dups.slice(0, 5))}`)
    log(`consumed ${got.length} records: every acknowledged value exactly once, at its acknowledged offset`)
    await admin.deleteTopics({ topics: [topic] }).catch(() => {})
  } finally {
    await admin.disconnect()
  }
}
GROUP_STEPS.add('kafkajs-failover')

async function main () {
  if (args.includes('--list')) {
    for (const s of Object.keys(STEPS)) console.log(s + (GROUP_STEPS.has(s) ? '  (groups)' : ''))
    return 0
  }
  const only = []
  args.forEach((a, i) => { if (a === '--step') only.push(args[i + 1]) })
  const names = only.length ? only : Object.keys(STEPS).filter((s) => args.includes('--groups') || !GROUP_STEPS.has(s))
  let failed = 0
  for (const name of names) {
    if (!STEPS[name]) {
      console.log(`FAILED: unknown step ${name}; known: ${Object.keys(STEPS).join(', ')}`)
      return 2
    }
    const t0 = Date.now()
    console.log(`--- ${name} (kafkajs, bootstrap ${BOOTSTRAP})`)
    try {
      await STEPS[name]()
      console.log(`ok ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`)
    } catch (e) {
      failed++
      if (!(e instanceof CheckFailed)) console.log(e && e.stack)
      console.log(`FAILED: ${e && e.message}`)
    }
  }
  if (names.length > 1) console.log(`${names.length - failed} passed, ${failed} failed`)
  return failed ? 1 : 0
}

main().then((rc) => process.exit(rc), (e) => { console.log(`FAILED: ${e && e.stack}`); process.exit(1) })
