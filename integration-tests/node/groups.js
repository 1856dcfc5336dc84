'use strict'
/**
 * Consumer groups (Kafka's classic group protocol) with kafkajs (pure JavaScript, its own
 * protocol code), installed by scripts/bootstrap.sh into integration-tests/node/node_modules.
 *
 * Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 node integration-tests/node/groups.js
 * Exit status 0 when every check passed; each prints an "ok:" line, and a failure ends the script
 * with "FAIL:" and why. The broker should run with `--set groups.group_initial_rebalance_delay_ms=0`.
 * The script exits 1 by itself after STREAMBUS_TEST_TIMEOUT_S seconds (default 540), and every
 * wait in it is bounded.
 *
 * On one topic of 6 partitions with 20 records in each:
 *   (a) 2 members (kafkajs's default round-robin assigner) get disjoint assignments covering all
 *       6 partitions, 3 each (as reported by each member's GROUP_JOIN events); a 3rd joins and
 *       the 3 end up with 2 each, disjoint, covering.
 *   (b) Commits: a member reads every partition, commits a different offset per partition with
 *       consumer.commitOffsets and disconnects; admin.fetchOffsets returns them and a new member
 *       starts each partition exactly there.
 *   (c) Admin on a 2-member group: listGroups shows it (protocol type consumer); describeGroups
 *       shows it Stable with the 2 members, their client ids and (decoded) assignments as the
 *       consumers see them.
 *
 * kafkajs only speaks non-flexible request versions (ApiVersions v0-v2, JoinGroup v0-v5,
 * SyncGroup v0-v3, Heartbeat v0-v3, LeaveGroup v0-v3, OffsetCommit v0-v5, OffsetFetch v1-v4,
 * DescribeGroups v0-v2, ListGroups v0-v2, FindCoordinator v0-v2), and consumer.commitOffsets
 * silently does nothing unless the consumer is running, so commits are checked through
 * admin.fetchOffsets.
 */

const { Kafka, AssignerProtocol, Partitioners, logLevel } = require('kafkajs')

const BOOTSTRAP = process.env.STREAMBUS_BOOTSTRAP || '127.0.0.1:9092'
const PARTITIONS = 6
const RECORDS_PER_PARTITION = 20
const TIMEOUT_MS = 30000
const REBALANCE_TIMEOUT_MS = 90000
const SETTLE_MS = 3000
const WATCHDOG_S = Number(process.env.STREAMBUS_TEST_TIMEOUT_S || 540)

// The offset committed per partition: a different one for each (3..8), as in the Python scripts.
const commitCutoff = partition => 3 + partition
const recordKey = (partition, i) => `p${partition}-k${String(i).padStart(3, '0')}`
const recordValue = (partition, i) => `partition ${partition} record ${i}`

const log = (...parts) =>
  console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...parts)
const ok = message => log('ok:', message)

class CheckFailed extends Error {}
const check = (condition, message) => {
  if (!condition) throw new CheckFailed(message)
}

const suffix = () => Math.random().toString(16).slice(2, 14).padEnd(12, '0')
const uniqueName = prefix => `${prefix}-${suffix()}`
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const sorted = set => [...set].sort((a, b) => a - b)
const formatAssignment = assignments =>
  Object.keys(assignments)
    .sort()
    .map(name => `${name}=[${sorted(assignments[name]).join(', ')}]`)
    .join(' ')

async function bounded(promise, what, ms = TIMEOUT_MS + 10000) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`${what} did not finish in ${ms / 1000}s`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

// kafkajs's own log lines, one each, to stderr. It logs every heartbeat answered with
// REBALANCE_IN_PROGRESS as an ERROR of the connection, and then a warning of the runner, which is
// how a member normally learns of a rebalance: those are left out (the member's "rebalancing"
// line shows it).
const logCreator = () => ({ namespace, label, log: entry }) => {
  const { message, error, clientId, groupId } = entry
  if ((namespace === 'Connection' || namespace === 'Runner') && /rebalancing/.test(String(error))) return
  log(`  kafkajs ${label} [${clientId || groupId || ''}] ${namespace}: ${message}${error ? ` (${error})` : ''}`)
}

function kafka(clientId) {
  return new Kafka({
    clientId,
    brokers: [BOOTSTRAP],
    logLevel: logLevel.WARN,
    logCreator,
    connectionTimeout: 10000,
    requestTimeout: TIMEOUT_MS,
    retry: { retries: 8 },
  })
}

/** None (null) if the sets are pairwise disjoint and cover 0..PARTITIONS-1; else what is wrong. */
function assignmentProblem(assignments) {
  const owners = new Map()
  for (const [name, parts] of Object.entries(assignments)) {
    for (const p of parts) owners.set(p, [...(owners.get(p) || []), name])
  }
  const shared = [...owners].filter(([, names]) => names.length > 1)
  if (shared.length) {
    return `partitions owned by more than one member: ${shared
      .map(([p, names]) => `${p} by ${names.join('+')}`)
      .join(', ')} (${formatAssignment(assignments)})`
  }
  const all = [...Array(PARTITIONS).keys()]
  const missing = all.filter(p => !owners.has(p))
  const extra = [...owners.keys()].filter(p => !all.includes(p))
  if (missing.length || extra.length) {
    return `assignment does not cover 0..${PARTITIONS - 1}: missing [${missing}], ` +
      `unknown [${extra}] (${formatAssignment(assignments)})`
  }
  const want = PARTITIONS / Object.keys(assignments).length
  const uneven = Object.entries(assignments).filter(([, parts]) => parts.size !== want)
  if (uneven.length) {
    return `expected ${want} partitions per member (${formatAssignment(assignments)})`
  }
  return null
}

class Member {
  constructor(name, groupId, topic) {
    this.name = name
    this.clientId = `streambus-groups-${name}`
    this.topic = topic
    this.assigned = new Set()
    this.events = []
    this.changedAt = Date.now()
    this.first = new Map() // partition -> first message read
    this.last = new Map() // partition -> offset of the last message read
    this.memberId = null
    this.fatal = null
    this.lastCrash = null
    this.consumer = kafka(this.clientId).consumer({
      groupId,
      sessionTimeout: 10000,
      rebalanceTimeout: 30000,
      heartbeatInterval: 500,
      // The fetch long poll also delays heartbeats, which is how a member learns of a rebalance.
      maxWaitTimeInMs: 100,
      allowAutoTopicCreation: false,
      retry: { retries: 8 },
    })
    const { GROUP_JOIN, REBALANCING, CRASH } = this.consumer.events
    this.consumer.on(GROUP_JOIN, ({ payload }) => {
      this.memberId = payload.memberId
      this.record('join', payload.memberAssignment[topic] || [])
    })
    this.consumer.on(REBALANCING, () => this.record('rebalancing', []))
    this.consumer.on(CRASH, ({ payload }) => {
      this.lastCrash = payload.error
      log(`  ${this.name}: crashed (restart: ${payload.restart}): ${payload.error && payload.error.message}`)
      if (!payload.restart) this.fatal = payload.error
    })
  }

  record(kind, partitions) {
    this.assigned = new Set(partitions)
    this.events.push(`${kind}[${sorted(this.assigned)}]`)
    this.changedAt = Date.now()
    log(`  ${this.name}: ${kind} -> now [${sorted(this.assigned)}]`)
  }

  async start() {
    await bounded(this.consumer.connect(), `${this.name} connect()`)
    await bounded(this.consumer.subscribe({ topics: [this.topic], fromBeginning: true }), `${this.name} subscribe()`)
    await bounded(
      this.consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          if (!this.first.has(partition)) this.first.set(partition, message)
          this.last.set(partition, Number(message.offset))
        },
      }),
      `${this.name} run()`
    )
  }

  async stop() {
    await bounded(this.consumer.disconnect(), `${this.name} disconnect()`)
  }

  describe() {
    return `${this.name} owns [${sorted(this.assigned)}] after ${this.events.slice(-6).join(' ')}` +
      (this.lastCrash ? ` (last crash: ${this.lastCrash.message})` : '')
  }
}

async function stopAll(members) {
  for (const m of members) await m.stop()
}

async function waitFor(members, what, done, timeoutMs = REBALANCE_TIMEOUT_MS) {
  const end = Date.now() + timeoutMs
  for (;;) {
    for (const m of members) check(!m.fatal, `${m.name} stopped for good: ${m.fatal && m.fatal.stack}`)
    const result = done()
    if (result) return result
    if (Date.now() >= end) {
      const state = members.map(m => m.describe()).join('; ')
      throw new CheckFailed(`timed out after ${timeoutMs / 1000}s waiting for ${what}: ${state}`)
    }
    await sleep(100)
  }
}

async function waitSettled(members, what) {
  const assignments = await waitFor(members, what, () => {
    const now = Date.now()
    if (members.some(m => m.assigned.size === 0 || now - m.changedAt < SETTLE_MS)) return null
    const union = new Set(members.flatMap(m => [...m.assigned]))
    if (union.size !== PARTITIONS) return null
    return Object.fromEntries(members.map(m => [m.name, new Set(m.assigned)]))
  })
  const problem = assignmentProblem(assignments)
  check(problem === null, `${what}: ${problem}`)
  ok(`${what}: ${formatAssignment(assignments)} (disjoint, all ${PARTITIONS} partitions)`)
  return assignments
}

async function createTopicWithRecords(admin) {
  const topic = uniqueName('jsg')
  const created = await bounded(
    admin.createTopics({
      topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: TIMEOUT_MS,
    }),
    'createTopics'
  )
  check(created === true, `createTopics(${topic}) returned ${created}`)
  const producer = kafka('streambus-groups-kafkajs-producer').producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  })
  await bounded(producer.connect(), 'producer connect()')
  try {
    for (let p = 0; p < PARTITIONS; p++) {
      const messages = []
      for (let i = 0; i < RECORDS_PER_PARTITION; i++) {
        messages.push({ key: recordKey(p, i), value: recordValue(p, i), partition: p })
      }
      const [meta] = await bounded(producer.send({ topic, acks: -1, messages }), `send to partition ${p}`)
      check(meta.errorCode === 0 && meta.partition === p && meta.baseOffset === '0',
        `partition ${p}: ${RECORDS_PER_PARTITION} records acknowledged as ${JSON.stringify(meta)}`)
    }
  } finally {
    await bounded(producer.disconnect(), 'producer disconnect()')
  }
  ok(`topic ${topic}: ${PARTITIONS} partitions with ${RECORDS_PER_PARTITION} records each`)
  return topic
}

async function startMember(members, name, groupId, topic) {
  const m = new Member(name, groupId, topic)
  members.push(m)
  await m.start()
  return m
}

async function checkTwoThenThree(topic) {
  const groupId = uniqueName('jsg-grow')
  const members = []
  try {
    await startMember(members, 'grow-1', groupId, topic)
    await startMember(members, 'grow-2', groupId, topic)
    await waitSettled(members, '2 members')
    await startMember(members, 'grow-3', groupId, topic)
    await waitSettled(members, '3rd member added')
  } finally {
    await stopAll(members)
  }
}

async function groupOffsets(admin, groupId, topic) {
  const result = await bounded(admin.fetchOffsets({ groupId, topics: [topic] }), 'fetchOffsets')
  check(result.length === 1 && result[0].topic === topic, `fetchOffsets: ${JSON.stringify(result)}`)
  return Object.fromEntries(result[0].partitions.map(({ partition, offset }) => [partition, Number(offset)]))
}

async function checkCommitAndResume(admin, topic) {
  const groupId = uniqueName('jsg-commit')
  const cutoffs = Object.fromEntries([...Array(PARTITIONS).keys()].map(p => [p, commitCutoff(p)]))
  const members = []
  try {
    const c1 = await startMember(members, 'commit-1', groupId, topic)
    await waitFor([c1], `commit-1 to read past offsets ${JSON.stringify(cutoffs)}`,
      () => Object.entries(cutoffs).every(([p, off]) => (c1.last.get(Number(p)) ?? -1) >= off))
    await bounded(
      c1.consumer.commitOffsets(
        Object.entries(cutoffs).map(([p, off]) => ({ topic, partition: Number(p), offset: String(off) }))
      ),
      'commitOffsets()'
    )
    ok(`commitOffsets of ${JSON.stringify(cutoffs)}`)
    const fetched = await groupOffsets(admin, groupId, topic)
    check(JSON.stringify(fetched) === JSON.stringify(cutoffs),
      `fetchOffsets returned ${JSON.stringify(fetched)}, expected ${JSON.stringify(cutoffs)}`)
    ok('admin.fetchOffsets returns the committed offsets')
  } finally {
    await stopAll(members.splice(0))
  }

  try {
    const c2 = await startMember(members, 'commit-2', groupId, topic)
    await waitFor([c2], 'commit-2 to read every partition', () => c2.first.size === PARTITIONS)
    const firsts = Object.fromEntries([...c2.first].map(([p, msg]) => [p, Number(msg.offset)]))
    check(JSON.stringify(firsts) === JSON.stringify(cutoffs),
      `the new member started at ${JSON.stringify(firsts)}, expected the committed ${JSON.stringify(cutoffs)}`)
    for (const [p, msg] of c2.first) {
      const want = [recordKey(p, cutoffs[p]), recordValue(p, cutoffs[p])]
      const got = [msg.key && msg.key.toString(), msg.value && msg.value.toString()]
      check(got[0] === want[0] && got[1] === want[1],
        `partition ${p} offset ${msg.offset} holds ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`)
    }
    ok('a new member of the group resumes every partition at the committed offset')
  } finally {
    await stopAll(members)
  }
}

async function checkAdmin(admin, topic) {
  const groupId = uniqueName('jsg-admin')
  const members = []
  try {
    await startMember(members, 'admin-1', groupId, topic)
    await startMember(members, 'admin-2', groupId, topic)
    const assignments = await waitSettled(members, 'group for the admin checks, 2 members')

    const { groups: listed } = await bounded(admin.listGroups(), 'listGroups')
    const entry = listed.find(g => g.groupId === groupId)
    check(entry, `listGroups does not show ${groupId}: ${JSON.stringify(listed)}`)
    check(entry.protocolType === 'consumer', `listGroups: ${JSON.stringify(entry)}`)
    ok(`listGroups shows ${groupId} (protocol type consumer)`)

    const { groups } = await bounded(admin.describeGroups([groupId]), 'describeGroups')
    check(groups.length === 1 && groups[0].groupId === groupId, `describeGroups: ${JSON.stringify(groups)}`)
    const group = groups[0]
    check(group.errorCode === 0, `describeGroups: error code ${group.errorCode}`)
    check(group.state === 'Stable', `describeGroups: state ${group.state}`)
    check(group.protocolType === 'consumer', `describeGroups: protocol type ${group.protocolType}`)
    check(group.protocol === 'RoundRobinAssigner',
      `describeGroups: protocol ${group.protocol}, expected RoundRobinAssigner`)
    check(group.members.length === 2, `describeGroups: ${group.members.length} members`)
    for (const m of members) {
      const described = group.members.find(d => d.memberId === m.memberId)
      check(described, `describeGroups lists ${group.members.map(d => d.memberId)}, not ${m.name}'s ${m.memberId}`)
      check(described.clientId === m.clientId, `describeGroups: ${m.name} has client id ${described.clientId}`)
      const decoded = AssignerProtocol.MemberAssignment.decode(described.memberAssignment)
      check(decoded, `describeGroups: ${m.name}'s assignment does not decode`)
      const topics = Object.keys(decoded.assignment)
      check(topics.length === 1 && topics[0] === topic,
        `describeGroups: ${m.name} assigned ${JSON.stringify(decoded.assignment)}`)
      const parts = new Set(decoded.assignment[topic])
      check(JSON.stringify(sorted(parts)) === JSON.stringify(sorted(assignments[m.name])),
        `describeGroups: ${m.name} assigned [${sorted(parts)}], the consumer has [${sorted(assignments[m.name])}]`)
    }
    ok('describeGroups: Stable, members, client ids and assignments as the consumers see them')
  } finally {
    await stopAll(members)
  }
}

async function main() {
  const watchdog = setTimeout(() => {
    log(`FAIL: still running after ${WATCHDOG_S}s; exiting`)
    process.exit(1)
  }, WATCHDOG_S * 1000)
  watchdog.unref()

  const { version } = require('kafkajs/package.json')
  log(`kafkajs ${version}, node ${process.version}, bootstrap ${BOOTSTRAP}`)
  const admin = kafka('streambus-groups-kafkajs-admin').admin({ retry: { retries: 8 } })
  await bounded(admin.connect(), 'admin connect()', 60000)
  try {
    const topic = await createTopicWithRecords(admin)
    log('(a) 2 then 3 members')
    await checkTwoThenThree(topic)
    log('(b) commit and resume')
    await checkCommitAndResume(admin, topic)
    log('(c) admin listGroups, describeGroups')
    await checkAdmin(admin, topic)
  } finally {
    await bounded(admin.disconnect(), 'admin disconnect()')
  }
  log('all checks passed')
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e && e.stack ? e.stack : e)
    log(`FAIL: ${e && e.message ? e.message : e}`)
    process.exit(1)
  }
)
