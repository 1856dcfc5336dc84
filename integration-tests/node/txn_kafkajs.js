'use strict'
/**
 * Transactions with kafkajs (pure JavaScript, its own protocol code): a transactional producer,
 * read_committed and read_uncommitted consumers, fencing and an exactly-once copy.
 *
 * Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 node integration-tests/node/txn_kafkajs.js
 * Exit status 0 when every check passed; each prints an "ok:" line, and a failure ends the script
 * with "FAIL:" and why. The broker should run with `--set groups.group_initial_rebalance_delay_ms=0`.
 * The script exits 1 by itself after STREAMBUS_TEST_TIMEOUT_S seconds (default 170), and every
 * wait in it is bounded.
 *
 *   (a) Commit and abort across 2 topics of 2 partitions: a committed transaction of 40 records
 *       (10 per partition), then an aborted one of 20, then a committed one of 20. A
 *       read_committed consumer reads exactly the 60 committed records, in order per partition;
 *       a read_uncommitted consumer reads all 80 data records. admin.fetchTopicOffsets (ListOffsets
 *       read_committed: the last stable offset) is 23 for every partition once all ended.
 *   (b) Zombie fencing: producer A opens a transaction and writes; producer B's first
 *       transaction() initializes the same transactionalId, which aborts A's transaction; A's
 *       commit fails with INVALID_PRODUCER_EPOCH (kafkajs's EndTxn v0-v1 answer for a fenced
 *       producer), and none of A's records is read_committed; B's transaction commits.
 *   (c) Consume-transform-produce: a group consumer (read_committed, eachBatch) reads 30 input
 *       records per partition and a transactional producer writes each transformed record with
 *       transaction.sendOffsets (AddOffsetsToTxn, TxnOffsetCommit), at most 10 input records per
 *       transaction. Before each transaction admin.fetchOffsets returns what the commits so far
 *       sent; the second transaction is aborted and the group's offsets stay where the first
 *       commit left them (asked before it began and after it ended: never while it is open), and
 *       its input is copied again from the committed offset. At the end the committed offsets are
 *       the input's end and the output read read_committed is every input record transformed
 *       once, in order.
 *
 * kafkajs speaks InitProducerId v0-v1, AddPartitionsToTxn v0-v1, AddOffsetsToTxn v0-v1,
 * TxnOffsetCommit v0-v1, EndTxn v0-v1, OffsetFetch v1-v4 (no require_stable) and Fetch up to v11,
 * and initializes a transactional producer on its first transaction().
 */

const { Kafka, Partitioners, logLevel } = require('kafkajs')

const BOOTSTRAP = process.env.STREAMBUS_BOOTSTRAP || '127.0.0.1:9092'
const PARTITIONS = 2
const TIMEOUT_MS = 30000
const QUIET_MS = 3000
const TRANSACTION_TIMEOUT_MS = 30000
const WATCHDOG_S = Number(process.env.STREAMBUS_TEST_TIMEOUT_S || 170)
const RETRY = { retries: 8, maxRetryTime: 5000 }

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
const show = value => JSON.stringify(value)

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

// kafkajs's own log lines, one each, to stderr; without its warning that a transactional producer
// with bounded retries may lose exactly-once (the retries are bounded on purpose here).
const logCreator = () => ({ namespace, label, log: entry }) => {
  const { message, error, clientId, groupId } = entry
  if (/Limiting retries for the idempotent producer/.test(message)) return
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
    retry: RETRY,
  })
}

async function createTopics(admin, names) {
  const created = await bounded(
    admin.createTopics({
      topics: names.map(topic => ({ topic, numPartitions: PARTITIONS, replicationFactor: 1 })),
      waitForLeaders: true,
      timeout: TIMEOUT_MS,
    }),
    'createTopics'
  )
  check(created === true, `createTopics(${names}) returned ${created}`)
}

/** A connected transactional producer; kafkajs sends InitProducerId on its first transaction(). */
async function transactionalProducer(transactionalId) {
  const producer = kafka(`streambus-txn-${transactionalId}`).producer({
    transactionalId,
    idempotent: true,
    maxInFlightRequests: 1,
    transactionTimeout: TRANSACTION_TIMEOUT_MS,
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
    retry: RETRY,
  })
  await bounded(producer.connect(), `producer ${transactionalId} connect()`)
  return producer
}

async function begin(producer, what) {
  return bounded(producer.transaction(), `${what}: transaction()`)
}

const value = (tag, topic, partition, i) => `${tag}-${topic}-${partition}-${i}`

/** `perPartition` records to each partition of each topic, values `tag-<topic>-<p>-<i>`. */
async function send(txn, topics, tag, perPartition) {
  const topicMessages = topics.map(topic => {
    const messages = []
    for (let partition = 0; partition < PARTITIONS; partition++) {
      for (let i = 0; i < perPartition; i++) {
        messages.push({ partition, value: value(tag, topic, partition, i) })
      }
    }
    return { topic, messages }
  })
  await bounded(txn.sendBatch({ acks: -1, topicMessages }), `send of ${tag}`)
}

/** { "topic/partition": [values] } with keys sorted, for comparisons and messages. */
function normalize(got) {
  return Object.fromEntries(Object.keys(got).sort().map(key => [key, got[key]]))
}

function expected(topics, tagsCounts) {
  const out = {}
  for (const topic of topics) {
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const values = []
      for (const [tag, n] of tagsCounts) {
        for (let i = 0; i < n; i++) values.push(value(tag, topic, partition, i))
      }
      out[`${topic}/${partition}`] = values
    }
  }
  return normalize(out)
}

/**
 * Every record of `topics` (from the start) as { "topic/partition": [values] }, read by a
 * consumer of a group of its own, until `expectedCount` records arrived and then QUIET_MS more
 * with nothing new (or TIMEOUT_MS passed).
 */
async function readAll(topics, readUncommitted, expectedCount) {
  const consumer = kafka('streambus-txn-reader').consumer({
    groupId: uniqueName('jst-reader'),
    readUncommitted,
    sessionTimeout: 10000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 100,
    allowAutoTopicCreation: false,
    retry: RETRY,
  })
  let fatal = null
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    log(`  reader crashed (restart: ${payload.restart}): ${payload.error && payload.error.message}`)
    if (!payload.restart) fatal = payload.error
  })
  const got = {}
  let count = 0
  let changedAt = Date.now()
  try {
    await bounded(consumer.connect(), 'reader connect()')
    await bounded(consumer.subscribe({ topics, fromBeginning: true }), 'reader subscribe()')
    await bounded(
      consumer.run({
        autoCommit: false,
        eachMessage: async ({ topic, partition, message }) => {
          const key = `${topic}/${partition}`
          got[key] = got[key] || []
          got[key].push(message.value.toString())
          count += 1
          changedAt = Date.now()
        },
      }),
      'reader run()'
    )
    const end = Date.now() + TIMEOUT_MS
    while (Date.now() < end) {
      check(!fatal, `the reader stopped: ${fatal && fatal.stack}`)
      if (count >= expectedCount && Date.now() - changedAt >= QUIET_MS) break
      await sleep(100)
    }
  } finally {
    await bounded(consumer.disconnect(), 'reader disconnect()')
  }
  return normalize(got)
}

async function checkCommitAbort(admin, topics) {
  const p = await transactionalProducer(uniqueName('jst-a'))
  try {
    let txn = await begin(p, 'first')
    await send(txn, topics, 'c1', 10)
    await bounded(txn.commit(), 'first commit')
    txn = await begin(p, 'second')
    await send(txn, topics, 'ab', 5)
    await bounded(txn.abort(), 'abort')
    txn = await begin(p, 'third')
    await send(txn, topics, 'c2', 5)
    await bounded(txn.commit(), 'second commit')
  } finally {
    await bounded(p.disconnect(), 'producer disconnect()')
  }
  ok(`commit, abort, commit across ${topics.length} topics`)

  const committed = await readAll(topics, false, 60)
  const want = expected(topics, [['c1', 10], ['c2', 5]])
  check(show(committed) === show(want), `read_committed read ${show(committed)}, expected ${show(want)}`)
  ok('read_committed reads exactly the 60 committed records, in order per partition')

  const everything = await readAll(topics, true, 80)
  const wantAll = expected(topics, [['c1', 10], ['ab', 5], ['c2', 5]])
  check(show(everything) === show(wantAll), `read_uncommitted read ${show(everything)}, expected ${show(wantAll)}`)
  ok('read_uncommitted reads all 80 records, the aborted ones included')

  for (const topic of topics) {
    const offsets = await bounded(admin.fetchTopicOffsets(topic), `fetchTopicOffsets(${topic})`)
    // Records, markers (3 transactions): 20 + 3 = 23 per partition.
    const ends = offsets.map(({ partition, high }) => [partition, Number(high)]).sort((a, b) => a[0] - b[0])
    check(show(ends) === show([[0, 23], [1, 23]]), `${topic}: end offsets ${show(ends)}, expected 23 each`)
  }
  ok('every partition ends past its 3 markers (offset 23, read_committed ListOffsets)')
}

async function checkFencing(topics) {
  const transactionalId = uniqueName('jst-zombie')
  const a = await transactionalProducer(transactionalId)
  let b = null
  try {
    const zombie = await begin(a, 'A')
    await send(zombie, topics, 'zombie', 3)
    log('A wrote its records; B initializes the same transactionalId')
    b = await transactionalProducer(transactionalId)
    const live = await begin(b, 'B') // InitProducerId: fences A and aborts its transaction
    let error = null
    try {
      await bounded(zombie.commit(), "A's commit")
    } catch (e) {
      error = e
    }
    check(error, 'the fenced producer committed')
    check(
      error.name === 'KafkaJSProtocolError' && (error.type === 'INVALID_PRODUCER_EPOCH' || error.code === 90),
      `the fenced producer's commit failed with ${error.name} ${error.type || ''}: ${error.message}, not as fenced`
    )
    ok(`the old instance's commit fails: ${error.type} (${error.message})`)
    await send(live, topics, 'live', 2)
    await bounded(live.commit(), "B's commit")
  } finally {
    await bounded(a.disconnect(), 'A disconnect()')
    if (b) await bounded(b.disconnect(), 'B disconnect()')
  }
  const committed = await readAll(topics, false, 2 * PARTITIONS * topics.length)
  const want = expected(topics, [['live', 2]])
  check(show(committed) === show(want), `after fencing, read_committed read ${show(committed)}, expected ${show(want)}`)
  ok("none of the zombie's records is read_committed; the new instance's commit is")
}

/** The group's committed offsets of `topic` as { partition: offset } (-1: none). */
async function groupOffsets(admin, groupId, topic) {
  const result = await bounded(admin.fetchOffsets({ groupId, topics: [topic] }), 'fetchOffsets')
  check(result.length === 1 && result[0].topic === topic, `fetchOffsets: ${show(result)}`)
  return Object.fromEntries(result[0].partitions.map(({ partition, offset }) => [partition, Number(offset)]))
}

/**
 * Waits (bounded) until the group's committed offsets are `want`: OffsetFetch below v7 cannot ask
 * for stable offsets, so a commit that just ended may not show for a moment.
 */
async function waitCommitted(admin, groupId, topic, want) {
  const end = Date.now() + TIMEOUT_MS
  for (;;) {
    const got = await groupOffsets(admin, groupId, topic)
    if (show(got) === show(want)) return got
    check(Date.now() < end, `the group's committed offsets stayed ${show(got)}, expected ${show(want)}`)
    await sleep(100)
  }
}

async function checkCopy(admin, source, sink) {
  const PER_PARTITION = 30
  const CHUNK = 10
  const input = kafka('streambus-txn-input').producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  })
  await bounded(input.connect(), 'input producer connect()')
  try {
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const messages = []
      for (let i = 0; i < PER_PARTITION; i++) messages.push({ partition, value: `in-${partition}-${i}` })
      await bounded(input.send({ topic: source, acks: -1, messages }), `input to partition ${partition}`)
    }
  } finally {
    await bounded(input.disconnect(), 'input producer disconnect()')
  }

  const groupId = uniqueName('jst-ctp')
  const copier = await transactionalProducer(uniqueName('jst-copier'))
  const consumer = kafka('streambus-txn-ctp').consumer({
    groupId,
    sessionTimeout: 30000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 100,
    allowAutoTopicCreation: false,
    retry: RETRY,
  })
  const state = {
    committed: Object.fromEntries([...Array(PARTITIONS).keys()].map(p => [p, -1])),
    rounds: 0,
    copied: 0,
    aborted: false,
    failure: null,
  }
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    log(`  copier's consumer crashed (restart: ${payload.restart}): ${payload.error && payload.error.message}`)
    if (!payload.restart) state.failure = state.failure || payload.error
  })

  // One partition's batch, at most CHUNK records per transaction. The second transaction is
  // aborted, and its records are copied again from the group's committed offset (which is in
  // this batch: offsets are resolved only as far as committed).
  async function copyBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }) {
    const { partition, messages } = batch
    let i = 0
    while (i < messages.length && isRunning() && !isStale()) {
      const chunk = messages.slice(i, i + CHUNK)
      const next = Number(chunk[chunk.length - 1].offset) + 1
      // Asked before the transaction begins, never while it is open.
      const before = await waitCommitted(admin, groupId, source, state.committed)
      const abort = !state.aborted && state.rounds === 1
      const txn = await begin(copier, `copy of ${partition}@${chunk[0].offset}`)
      await bounded(
        txn.send({
          topic: sink,
          acks: -1,
          messages: chunk.map(m => ({ partition, value: `out-${m.value.toString()}` })),
        }),
        'send of the transformed records'
      )
      await bounded(
        txn.sendOffsets({
          consumerGroupId: groupId,
          topics: [{ topic: source, partitions: [{ partition, offset: String(next) }] }],
        }),
        'sendOffsets'
      )
      if (abort) {
        await bounded(txn.abort(), 'abort')
        state.aborted = true
        const after = await groupOffsets(admin, groupId, source)
        check(show(after) === show(before), `an aborted transaction moved the offsets: ${show(before)} -> ${show(after)}`)
        ok(`an aborted transaction (offset ${next} of partition ${partition}) leaves the group's offsets at ${show(after)}`)
        const from = Math.max(after[partition], 0)
        i = messages.findIndex(m => Number(m.offset) === from)
        check(i >= 0, `committed offset ${from} of partition ${partition} is not in the batch ` +
          `(${messages[0].offset}..${messages[messages.length - 1].offset})`)
        continue
      }
      await bounded(txn.commit(), 'commit')
      state.committed[partition] = next
      state.rounds += 1
      state.copied += chunk.length
      resolveOffset(chunk[chunk.length - 1].offset)
      await bounded(heartbeat(), 'heartbeat()')
      i += chunk.length
    }
  }

  try {
    await bounded(consumer.connect(), 'consumer connect()')
    await bounded(consumer.subscribe({ topics: [source], fromBeginning: true }), 'consumer subscribe()')
    await bounded(
      consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        eachBatch: async args => {
          if (state.failure) return
          try {
            await copyBatch(args)
          } catch (e) {
            state.failure = state.failure || e
          }
        },
      }),
      'consumer run()'
    )
    const end = Date.now() + 2 * TIMEOUT_MS
    while (state.copied < PER_PARTITION * PARTITIONS && !state.failure && Date.now() < end) await sleep(100)
    if (state.failure) throw state.failure
    check(state.copied === PER_PARTITION * PARTITIONS,
      `copied ${state.copied} records in ${state.rounds} transactions (timed out after ${2 * TIMEOUT_MS / 1000}s)`)
    check(state.aborted, 'no transaction was aborted')
  } finally {
    await bounded(consumer.disconnect(), 'consumer disconnect()')
    await bounded(copier.disconnect(), 'copier disconnect()')
  }
  const ends = Object.fromEntries([...Array(PARTITIONS).keys()].map(p => [p, PER_PARTITION]))
  const offsets = await waitCommitted(admin, groupId, source, ends)
  ok(`${state.rounds} transactions each committed their offsets with their records: ${show(offsets)}`)

  const out = await readAll([sink], false, PER_PARTITION * PARTITIONS)
  const want = {}
  for (let partition = 0; partition < PARTITIONS; partition++) {
    want[`${sink}/${partition}`] = [...Array(PER_PARTITION).keys()].map(i => `out-in-${partition}-${i}`)
  }
  check(show(out) === show(normalize(want)), `the copy read_committed is ${show(out)}, expected ${show(normalize(want))}`)
  ok('the output is every input record transformed exactly once, in order')
}

async function main() {
  const watchdog = setTimeout(() => {
    log(`FAIL: still running after ${WATCHDOG_S}s; exiting`)
    process.exit(1)
  }, WATCHDOG_S * 1000)
  watchdog.unref()

  const { version } = require('kafkajs/package.json')
  log(`kafkajs ${version}, node ${process.version}, bootstrap ${BOOTSTRAP}`)
  const admin = kafka('streambus-txn-kafkajs-admin').admin({ retry: RETRY })
  await bounded(admin.connect(), 'admin connect()', 60000)
  try {
    const first = [uniqueName('jst-one'), uniqueName('jst-two')]
    const second = [uniqueName('jst-zmb')]
    const [source, sink] = [uniqueName('jst-src'), uniqueName('jst-dst')]
    await createTopics(admin, [...first, ...second, source, sink])
    log('(a) commit, abort, commit')
    await checkCommitAbort(admin, first)
    log('(b) zombie fencing')
    await checkFencing(second)
    log('(c) consume-transform-produce')
    await checkCopy(admin, source, sink)
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
