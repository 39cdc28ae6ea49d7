// MQTT.js side of the client-library conformance tests
// (broker-image/clientlibs_test.go starts the broker and runs this script).
//
//   node scenario.mjs <scenario>
//
// Environment: MQTT_URL (mqtt://host:port or ws://host:port/path), MQTT_VERSION
// (4 = 3.1.1, 5), MQTT_USER, MQTT_PASSWORD, MQTT_PREFIX (a topic prefix the
// user may publish and subscribe under), MQTT_DENIED (a topic the user may
// not publish to), MQTT_MAX_PACKET (the broker's maximum packet size).
// Prints "ok: <what was seen>" and exits 0, or "FAIL: <why>" and exits 1.
import mqtt from 'mqtt'

const env = process.env
const url = env.MQTT_URL
const version = Number(env.MQTT_VERSION || 5)
const prefix = env.MQTT_PREFIX
const scenario = process.argv[2]
let ids = 0

function fail (why) {
  console.log(`FAIL: ${why}`)
  process.exit(1)
}

// connect resolves with the client and its CONNACK, or rejects with the
// error MQTT.js reports (its .code is the CONNACK return/reason code).
function connect (extra = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, {
      protocolVersion: version,
      username: env.MQTT_USER,
      password: env.MQTT_PASSWORD,
      clientId: `js-${scenario}-${process.pid}-${ids++}`,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      ...extra
    })
    c.once('connect', (connack) => resolve({ c, connack }))
    c.once('error', (err) => { c.end(true); reject(err) })
  })
}

// collect records every message a client receives, in order.
function collect (c) {
  const got = []
  c.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }))
  return got
}

async function until (what, cond, ms = 20000) {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) fail(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

function sleep (ms) { return new Promise((resolve) => setTimeout(resolve, ms)) }

const scenarios = {
  // QoS 0, 1 and 2 round trip, in order.
  async pubsub () {
    const { c } = await connect()
    const got = collect(c)
    await c.subscribeAsync(`${prefix}/pubsub/#`, { qos: 2 })
    for (let i = 0; i < 30; i++) {
      await c.publishAsync(`${prefix}/pubsub/${i % 3}`, `m${i}`, { qos: i % 3 })
    }
    await until('30 messages', () => got.length >= 30)
    // In order per topic (one QoS each): MQTT.js hands a QoS 2 message over
    // at PUBREL, so across QoS levels its order is its own.
    for (let q = 0; q < 3; q++) {
      const order = got.filter((m) => m.topic.endsWith(`/${q}`)).map((m) => m.payload).join(',')
      const want = Array.from({ length: 10 }, (_, i) => `m${3 * i + q}`).join(',')
      if (order !== want) fail(`QoS ${q} out of order: ${order}`)
    }
    await c.endAsync()
    return '30 messages at QoS 0/1/2, in order per topic'
  },

  // Issue #11 item 1: a shared subscription is judged by its topic filter and
  // each message goes to one member of the group.
  async shared () {
    const a = await connect(); const b = await connect(); const all = await connect()
    const gotA = collect(a.c); const gotB = collect(b.c); const gotAll = collect(all.c)
    for (const m of [a, b]) {
      const granted = await m.c.subscribeAsync(`$share/grp/${prefix}/shared/#`, { qos: 1 })
      if (granted[0].qos > 2) fail(`shared subscription refused: SUBACK ${granted[0].qos}`)
    }
    await all.c.subscribeAsync(`${prefix}/shared/#`, { qos: 1 })
    const n = 40
    for (let i = 0; i < n; i++) await all.c.publishAsync(`${prefix}/shared/x`, `s${i}`, { qos: 1 })
    await until(`${n} messages at the plain subscriber and across the group`, () => gotAll.length >= n && gotA.length + gotB.length >= n)
    await sleep(300) // a duplicate would arrive now
    const seen = new Set([...gotA, ...gotB].map((m) => m.payload))
    if (gotA.length + gotB.length !== n || seen.size !== n) fail(`group got ${gotA.length}+${gotB.length} messages, ${seen.size} distinct, want ${n}`)
    for (const m of [a, b, all]) await m.c.endAsync()
    return `group members got ${gotA.length}+${gotB.length} of ${n}, each once; plain subscriber ${gotAll.length}`
  },

  // Issue #11 item 2: PUBACK/PUBREC for a publish with user properties is a
  // success code, and the publish completes.
  async pubackProps () {
    const { c } = await connect()
    const codes = []
    c.on('packetreceive', (p) => {
      if (p.cmd === 'puback' || p.cmd === 'pubrec' || p.cmd === 'pubcomp') {
        codes.push(`${p.cmd}:${p.reasonCode ?? 0}:${JSON.stringify(p.properties ?? {})}`)
      }
    })
    for (const qos of [1, 2]) {
      await c.publishAsync(`${prefix}/props/${qos}`, 'with properties', { qos, properties: { userProperties: { origin: 'js', n: '1' } } })
    }
    await c.endAsync()
    for (const code of codes) {
      if (!/^pub(ack|rec|comp):(0|16):\{\}$/.test(code)) fail(`unexpected acknowledgement ${code}`)
    }
    return `acknowledgements ${codes.join(' ')}`
  },

  // Issue #11 item 3: a subscriber's Receive Maximum is honoured by queueing,
  // in order, not by dropping or stalling.
  async receiveMaximum () {
    const sub = await connect({ properties: { receiveMaximum: 20 } })
    const got = collect(sub.c)
    await sub.c.subscribeAsync(`${prefix}/rxmax/#`, { qos: 1 })
    const pub = await connect()
    const n = 1000
    const sends = []
    for (let i = 0; i < n; i++) sends.push(pub.c.publishAsync(`${prefix}/rxmax/t`, `${i}`, { qos: 1 }))
    await Promise.all(sends)
    await until(`${n} messages at a subscriber with Receive Maximum 20`, () => got.length >= n, 30000)
    for (let i = 0; i < n; i++) {
      if (got[i].payload !== `${i}`) fail(`message ${i} is ${got[i].payload}`)
    }
    await pub.c.endAsync(); await sub.c.endAsync()
    return `${n} QoS 1 messages in order through a window of 20`
  },

  // Issue #11 item 4: topic aliases both ways, judged on the resolved topic.
  async topicAlias () {
    const sub = await connect({ properties: { topicAliasMaximum: 5 } })
    const got = collect(sub.c)
    let aliasedIn = 0
    sub.c.on('packetreceive', (p) => { if (p.cmd === 'publish' && p.properties?.topicAlias) aliasedIn++ })
    await sub.c.subscribeAsync(`${prefix}/alias/#`, { qos: 1 })
    const pub = await connect()
    const max = pub.connack.properties?.topicAliasMaximum ?? 0
    if (max < 1) fail(`CONNACK advertises Topic Alias Maximum ${max}`)
    await pub.c.publishAsync(`${prefix}/alias/one`, 'a1', { qos: 1, properties: { topicAlias: 1 } })
    await pub.c.publishAsync('', 'a2', { qos: 1, properties: { topicAlias: 1 } })
    await pub.c.publishAsync(`${prefix}/alias/one`, 'a3', { qos: 1 })
    await until('3 messages', () => got.length >= 3)
    for (const m of got) if (m.topic !== `${prefix}/alias/one`) fail(`message ${m.payload} arrived on "${m.topic}"`)
    await pub.c.endAsync(); await sub.c.endAsync()
    return `server Topic Alias Maximum ${max}; 3 messages on the resolved topic (${aliasedIn} arrived aliased)`
  },

  // Issue #11 item 5: the CONNACK states the server's limits, and an
  // over-size packet is answered with DISCONNECT 0x95.
  async serverLimits () {
    const { c, connack } = await connect()
    const p = connack.properties ?? {}
    const want = Number(env.MQTT_MAX_PACKET)
    if (p.maximumPacketSize !== want) fail(`CONNACK Maximum Packet Size ${p.maximumPacketSize}, want ${want}`)
    for (const k of ['topicAliasMaximum', 'receiveMaximum']) if (!(p[k] > 0)) fail(`CONNACK has no ${k}: ${JSON.stringify(p)}`)
    let reason = null
    c.on('disconnect', (pk) => { reason = pk.reasonCode })
    c.on('error', () => {})
    // Past MQTT.js's own check, which honours the server's maximum.
    c.stream.write(rawPublish(`${prefix}/big`, Buffer.alloc(want + 16)))
    await until('DISCONNECT after an over-size packet', () => reason !== null, 5000)
    if (reason !== 0x95) fail(`DISCONNECT reason 0x${reason.toString(16)}, want 0x95`)
    c.end(true)
    return `CONNACK ${JSON.stringify(p)}; over-size publish -> DISCONNECT 0x95`
  },

  // Issue #11 item 6: an MQTT 3.1.1 publish the ACL denies is acknowledged
  // and dropped; the connection stays up.
  async deniedPublish () {
    const { c } = await connect()
    const got = collect(c)
    let closed = false
    c.on('close', () => { closed = true })
    await c.subscribeAsync(`${prefix}/after/#`, { qos: 1 })
    await Promise.race([
      c.publishAsync(env.MQTT_DENIED, 'not allowed', { qos: 1 }),
      sleep(5000).then(() => fail('no PUBACK for a denied 3.1.1 publish'))
    ])
    await c.publishAsync(`${prefix}/after/x`, 'still connected', { qos: 1 })
    await until('the next message', () => got.length >= 1 || closed)
    if (closed) fail('the broker closed the connection')
    await c.endAsync()
    return 'denied QoS 1 publish acknowledged and dropped; connection kept'
  },

  // Issue #11 item 7: a will with a delay is sent within 0.5 s of the delay.
  async willDelay () {
    const sub = await connect()
    const got = collect(sub.c)
    let at = 0
    sub.c.on('message', () => { at = at || Date.now() })
    await sub.c.subscribeAsync(`${prefix}/will/#`, { qos: 1 })
    const w = await connect({
      clean: true,
      properties: { sessionExpiryInterval: 30 },
      will: { topic: `${prefix}/will/w`, payload: Buffer.from('gone'), qos: 1, retain: false, properties: { willDelayInterval: 3 } }
    })
    w.c.on('error', () => {})
    const lost = Date.now()
    w.c.stream.destroy() // the connection drops without DISCONNECT
    await until('the will', () => got.length >= 1, 10000)
    const delay = (at - lost) / 1000
    if (delay < 3 || delay > 3.5) fail(`will delay 3 s, will arrived after ${delay.toFixed(2)} s`)
    await sub.c.endAsync()
    return `will delay 3 s: will arrived after ${delay.toFixed(2)} s`
  },

  // Issue #11 item 14: the CONNACK code for a wrong password.
  async badPassword () {
    try {
      const { c } = await connect({ password: 'not-the-password' })
      c.end(true)
      fail('connected with a wrong password')
    } catch (err) {
      return `code=${err.code}`
    }
  }
}

// rawPublish encodes a QoS 0 PUBLISH by hand: MQTT.js refuses to send a
// packet over the server's maximum, which is what this test needs to send.
function rawPublish (topic, payload) {
  const t = Buffer.from(topic)
  const props = version === 5 ? Buffer.from([0]) : Buffer.alloc(0)
  const body = Buffer.concat([Buffer.from([t.length >> 8, t.length & 255]), t, props, payload])
  const len = []
  let x = body.length
  do {
    let b = x % 128
    x = Math.floor(x / 128)
    if (x > 0) b |= 128
    len.push(b)
  } while (x > 0)
  return Buffer.concat([Buffer.from([0x30, ...len]), body])
}

if (!scenarios[scenario]) fail(`unknown scenario ${scenario}; known: ${Object.keys(scenarios).join(', ')}`)
const timer = setTimeout(() => fail('scenario took over 60 s'), 60000)
scenarios[scenario]().then((what) => {
  clearTimeout(timer)
  console.log(`ok: ${what}`)
  process.exit(0)
}, (err) => fail(err?.stack ?? String(err)))
