'use strict';
// The load driver of benchmarks/realtime.py: many websocket clients (and HTTP senders)
// in one Node process, separate from the server under test.
//
//   node client.js '<json config>'
//
// The config names the server ({"kind": "flask-chat" | "node-ws" | "socketio", "host",
// "port", "sources": [local addresses to spread connections over], "tokensFile"}).
// Commands come on stdin, one JSON object a line; each gets one JSON line on stdout.
//
// The websocket client is a minimal one of its own (RFC 6455 framing over `net`), so
// that reading a frame costs little: a frame is counted as a delivery when it is a
// message event whose text carries a benchmark marker, "~bm<step>.<seq>.<usec>.<to>~".
// <usec> is when this process sent it (performance.now(), in microseconds), so latency
// is receive time minus send time on one clock; <to> is the recipient user (0 for a
// group: every member counts).

const fs = require('fs');
const net = require('net');
const http = require('http');
const crypto = require('crypto');
const readline = require('readline');
const { performance } = require('perf_hooks');

const cfg = JSON.parse(process.argv[2]);
const KIND = cfg.kind;
const SIO = KIND === 'socketio';
const TOKENS = cfg.tokensFile ? JSON.parse(fs.readFileSync(cfg.tokensFile, 'utf8')) : {};
const SOURCES = cfg.sources && cfg.sources.length ? cfg.sources : ['127.0.0.1'];
const KEY = crypto.randomBytes(16).toString('base64');
const MASK = crypto.randomBytes(4);
const MARK = Buffer.from('~bm');
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024); // shared by every socket's reads
const MSG_PREFIX = Buffer.from(SIO ? '42["message"' : '{"type":"message"');
const ERR_PREFIX = Buffer.from(SIO ? '44' : '{"type":"error"');
const PRESENCE_PREFIX = Buffer.from('{"type":"presence"');
// The frame that ends a connect: flask-chat's online snapshot comes after the presence
// registration (its hello before it); the Node server says hello once subscribed.
const READY = KIND === 'flask-chat' ? '{"type":"online"' : '{"type":"hello"';
const HTTP_PATH = KIND === 'flask-chat' ? '/chats/send_message' : '/send';

const now = () => performance.now();
const log = (...a) => process.stderr.write(`[client] ${a.join(' ')}\n`);

// -- latency histogram: 0.1 ms buckets up to 30 s ---------------------------------------

class Hist {
  constructor() {
    this.b = new Uint32Array(300001);
    this.n = 0;
    this.max = 0;
  }
  add(ms) {
    let i = Math.ceil(ms * 10);
    if (i < 0) i = 0;
    else if (i > 300000) i = 300000;
    this.b[i]++;
    this.n++;
    if (ms > this.max) this.max = ms;
  }
  pct(p) {
    if (!this.n) return null;
    const target = Math.max(1, Math.ceil((p / 100) * this.n));
    let c = 0;
    for (let i = 0; i < this.b.length; i++) {
      c += this.b[i];
      if (c >= target) return Math.min(i / 10, this.max);
    }
    return this.max;
  }
  summary() {
    return { n: this.n, p50: this.pct(50), p99: this.pct(99), max: this.n ? this.max : null };
  }
}

// -- measurement steps ------------------------------------------------------------------

const steps = new Map(); // step id -> {received, hist}
let stepSeq = 0;
const counters = { frames: 0, acks: 0, errors: 0, errorSamples: [], closes: 0, closeSamples: [] };
// Presence frames received anywhere, and what tracked connections (churn observers) saw.
const presence = { frames: 0, tracked: 0, changes: 0, online: 0, offline: 0, flaps: 0, unparsed: 0, samples: [] };

function resetPresence() {
  for (const k of Object.keys(presence)) presence[k] = k === 'samples' ? [] : 0;
}

// [user, online] pairs from a presence frame. Today's shape is {"user_id", "online": bool};
// batched shapes are read too ({"users": [...], "online": bool}, {"online": [...],
// "offline": [...]}, {"users": {"<id>": bool}}, lists of those under "changes"/"events"),
// so that a change of shape changes the counts, not the benchmark.
function presenceChanges(obj, out) {
  if (Array.isArray(obj)) {
    for (const x of obj) presenceChanges(x, out);
    return out;
  }
  if (!obj || typeof obj !== 'object') return out;
  const id = (u) => (u && typeof u === 'object' ? Number(u.user_id ?? u.id) : Number(u));
  if (typeof obj.online === 'boolean') {
    if (obj.user_id !== undefined) out.push([Number(obj.user_id), obj.online]);
    for (const key of ['users', 'user_ids']) {
      if (Array.isArray(obj[key])) for (const u of obj[key]) out.push([id(u), obj.online]);
    }
  } else {
    for (const [key, on] of [['online', true], ['offline', false]]) {
      if (Array.isArray(obj[key])) for (const u of obj[key]) out.push([id(u), on]);
    }
    const users = obj.users;
    if (users && typeof users === 'object' && !Array.isArray(users)) {
      for (const [u, on] of Object.entries(users)) if (typeof on === 'boolean') out.push([Number(u), on]);
    }
  }
  for (const key of ['changes', 'events', 'presence', 'batch']) {
    if (obj[key] && typeof obj[key] === 'object') presenceChanges(obj[key], out);
  }
  return out;
}

// A tracked connection's view of others: an offline then an online of the same user is
// a flap (what a short grace before announcing offline is meant to hide).
function trackPresence(conn, buf, s, e) {
  presence.tracked++;
  let changes = [];
  try {
    changes = presenceChanges(JSON.parse(buf.toString('utf8', s, e)), []);
  } catch (err) {
    changes = [];
  }
  if (!changes.length) {
    presence.unparsed++;
    if (presence.samples.length < 3) presence.samples.push(buf.toString('utf8', s, Math.min(e, s + 200)));
    return;
  }
  for (const [user, online] of changes) {
    if (user === conn.user) continue;
    presence.changes++;
    if (online) {
      presence.online++;
      if (conn.track.get(user) === false) presence.flaps++;
    } else presence.offline++;
    conn.track.set(user, online);
  }
}

function newStep() {
  const st = { id: ++stepSeq, received: 0, hist: new Hist(), ackHist: new Hist() };
  steps.set(st.id, st);
  if (steps.size > 4) steps.delete(Math.min(...steps.keys()));
  return st;
}

function marker(st, seq, to) {
  return `~bm${st.id}.${seq}.${Math.round(now() * 1000)}.${to}~`;
}

// Parse "~bm<step>.<seq>.<usec>.<to>~" starting at i (just after "~bm").
function onMarker(buf, i, end, user, ack) {
  const nums = [0, 0, 0, 0];
  let k = 0;
  for (; i < end && k < 4; i++) {
    const c = buf[i];
    if (c >= 48 && c <= 57) nums[k] = nums[k] * 10 + (c - 48);
    else if (c === 46) k++;
    else if (c === 126) break;
    else return;
  }
  const st = steps.get(nums[0]);
  if (!st) return;
  if (ack) {
    st.ackHist.add((now() * 1000 - nums[2]) / 1000);
    return;
  }
  if (nums[3] !== 0 && nums[3] !== user) return; // a copy to the sender's own channel
  st.received++;
  st.hist.add((now() * 1000 - nums[2]) / 1000);
}

// -- the websocket client ---------------------------------------------------------------

let sourceIndex = 0;

function wsPath(user) {
  if (KIND === 'flask-chat') return `/chats/ws?token=${encodeURIComponent(TOKENS[user])}`;
  if (SIO) return `/socket.io/?EIO=4&transport=websocket&user=${user}`;
  return `/ws?user=${user}`;
}

class Conn {
  constructor(user, onSettled) {
    this.user = user;
    this.onSettled = onSettled; // (conn, ok, reason) once: ready, or failed
    this.state = 0; // 0 handshake, 1 upgraded, 2 ready, 3 closed
    this.hbuf = null;
    this.buf = null;
    this.pingSent = 0;
    this.onPong = null;
    const local = SOURCES[sourceIndex++ % SOURCES.length];
    // `onread` hands every read to us in one shared buffer: no stream machinery and no
    // allocation per read, which is most of what reading a small frame costs in Node.
    const sock = (this.sock = net.connect({
      host: cfg.host,
      port: cfg.port,
      localAddress: local,
      onread: { buffer: READ_BUFFER, callback: (n, buf) => this.onData(buf.subarray(0, n)) },
    }));
    sock.setNoDelay(true);
    sock.on('connect', () => {
      sock.write(
        `GET ${wsPath(user)} HTTP/1.1\r\nHost: ${cfg.host}:${cfg.port}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    sock.on('error', (e) => {
      this.error = e.code || e.message;
    });
    sock.on('close', () => this.onClose());
  }

  settle(ok, reason) {
    const f = this.onSettled;
    if (f) {
      this.onSettled = null;
      f(this, ok, reason);
    }
  }

  get ready() {
    return this.state === 2;
  }

  onClose() {
    const was = this.state;
    this.state = 3;
    if (was === 2) {
      counters.closes++;
      if (counters.closeSamples.length < 5) counters.closeSamples.push(this.closeInfo || this.error || 'eof');
    }
    this.settle(false, this.failReason || this.error || 'closed before ready');
  }

  fail(reason) {
    this.failReason = reason;
    this.sock.destroy();
  }

  onData(d) {
    if (this.state === 0) {
      this.hbuf = this.hbuf ? Buffer.concat([this.hbuf, d]) : Buffer.from(d);
      const i = this.hbuf.indexOf('\r\n\r\n');
      if (i < 0) {
        if (this.hbuf.length > 65536) this.fail('handshake too long');
        return;
      }
      const status = this.hbuf.toString('latin1', 0, Math.min(i, 64)).split('\r\n')[0];
      if (!status.startsWith('HTTP/1.1 101')) {
        this.fail(status);
        return;
      }
      const rest = this.hbuf.subarray(i + 4);
      this.hbuf = null;
      this.state = 1;
      if (rest.length) this.frames(rest);
      return;
    }
    if (this.state !== 3) this.frames(d);
  }

  frames(d) {
    const buf = this.buf ? Buffer.concat([this.buf, d]) : d;
    this.buf = null;
    const end = buf.length;
    let pos = 0;
    while (end - pos >= 2) {
      const b0 = buf[pos];
      let len = buf[pos + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (end - pos < 4) break;
        len = buf.readUInt16BE(pos + 2);
        head = 4;
      } else if (len === 127) {
        if (end - pos < 10) break;
        len = buf.readUInt32BE(pos + 2) * 4294967296 + buf.readUInt32BE(pos + 6);
        head = 10;
      }
      if (end - pos < head + len) break;
      const start = pos + head;
      pos = start + len;
      const op = b0 & 0x0f;
      if (op <= 2) this.onText(buf, start, pos);
      else if (op === 9) this.write(buf.subarray(start, pos), 0x8a);
      else if (op === 10) {
        if (this.onPong) this.onPong(this);
      } else if (op === 8) {
        this.closeInfo = `close ${len >= 2 ? buf.readUInt16BE(start) : ''} ${buf.toString('utf8', start + 2, pos)}`;
        this.sock.end();
      }
    }
    if (pos < end) this.buf = Buffer.from(buf.subarray(pos));
  }

  onText(buf, s, e) {
    counters.frames++;
    if (this.state !== 2) {
      if (isPresence(buf, s, e)) presence.frames++;
      if (SIO) {
        if (buf[s] === 0x30 /* '0': engine.io open */) this.sendText('40');
        else if (buf[s] === 0x34 && buf[s + 1] === 0x30 /* '40': socket.io connected */) {
          this.state = 2;
          this.settle(true);
        } else if (buf[s] === 0x34 && buf[s + 1] === 0x34) this.fail(buf.toString('utf8', s, e));
      } else if (buf.toString('latin1', s, Math.min(e, s + READY.length)) === READY) {
        this.state = 2;
        this.settle(true);
      } else if (buf.toString('latin1', s, Math.min(e, s + 15)) === '{"type":"error"') {
        this.fail(buf.toString('utf8', s, e));
      }
      return;
    }
    if (SIO && e - s === 1 && buf[s] === 0x32 /* engine.io ping */) {
      this.sendText('3');
      return;
    }
    if (e - s > MSG_PREFIX.length && buf.compare(MSG_PREFIX, 0, MSG_PREFIX.length, s, s + MSG_PREFIX.length) === 0) {
      const m = buf.indexOf(MARK, s);
      if (m >= 0 && m < e) onMarker(buf, m + 3, e, this.user);
      return;
    }
    if (isPresence(buf, s, e)) {
      presence.frames++;
      if (this.track) trackPresence(this, buf, s, e);
      return;
    }
    if (!SIO && buf[s + 9] === 0x61 /* {"type":"ack" */) {
      counters.acks++;
      const m = buf.indexOf(MARK, s);
      if (m >= 0 && m < e) onMarker(buf, m + 3, e, this.user, true);
      return;
    }
    if (e - s >= ERR_PREFIX.length && buf.compare(ERR_PREFIX, 0, ERR_PREFIX.length, s, s + ERR_PREFIX.length) === 0) {
      counters.errors++;
      if (counters.errorSamples.length < 5) counters.errorSamples.push(buf.toString('utf8', s, Math.min(e, s + 300)));
    }
  }

  write(payload, b0) {
    if (this.state === 3) return false;
    const n = payload.length;
    let header;
    if (n < 126) {
      header = Buffer.allocUnsafe(6);
      header[1] = 0x80 | n;
    } else if (n < 65536) {
      header = Buffer.allocUnsafe(8);
      header[1] = 0x80 | 126;
      header.writeUInt16BE(n, 2);
    } else {
      header = Buffer.allocUnsafe(14);
      header[1] = 0x80 | 127;
      header.writeUInt32BE(0, 2);
      header.writeUInt32BE(n, 6);
    }
    header[0] = b0;
    MASK.copy(header, header.length - 4);
    const frame = Buffer.allocUnsafe(header.length + n);
    header.copy(frame, 0);
    for (let i = 0, o = header.length; i < n; i++) frame[o + i] = payload[i] ^ MASK[i & 3];
    this.sock.write(frame);
    return true;
  }

  sendText(text) {
    return this.write(Buffer.from(text), 0x81);
  }

  // Leave as a browser tab does on navigation: a close frame (1001 going away), then FIN.
  goAway() {
    if (this.state === 3) return;
    this.write(Buffer.from([0x03, 0xe9]), 0x88);
    this.state = 3;
    this.onSettled = null;
    this.sock.end();
    // A server that never answers the close must not keep the socket for good.
    setTimeout(() => this.sock.destroy(), 5000).unref();
  }

  destroy() {
    if (this.state !== 3) {
      this.state = 3;
      this.sock.destroy();
    }
  }
}

function isPresence(buf, s, e) {
  const n = PRESENCE_PREFIX.length;
  return e - s > n && buf.compare(PRESENCE_PREFIX, 0, n, s, s + n) === 0;
}

// -- connection sets --------------------------------------------------------------------

const sets = new Map(); // name -> Map(user -> Conn)

function openMany(users, concurrency, timeoutMs, into) {
  return new Promise((resolve) => {
    const t0 = now();
    let next = 0;
    let inflight = 0;
    let ready = 0;
    let failed = 0;
    const reasons = {};
    let done = false;
    const deadline = setTimeout(() => finish(true), timeoutMs);
    function finish(timedOut) {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      const seconds = (now() - t0) / 1000;
      resolve({ requested: users.length, ready, failed, seconds, rate: ready / seconds, timedOut: !!timedOut, reasons });
    }
    function launch() {
      while (!done && inflight < concurrency && next < users.length) {
        const user = users[next++];
        inflight++;
        const conn = new Conn(user, (c, ok, reason) => {
          inflight--;
          if (ok) ready++;
          else {
            failed++;
            const key = String(reason).slice(0, 80);
            reasons[key] = (reasons[key] || 0) + 1;
          }
          if (next >= users.length && inflight === 0) finish(false);
          else launch();
        });
        into.set(user, conn);
      }
    }
    if (!users.length) finish(false);
    else launch();
  });
}

function openConns(set) {
  return [...set.values()].filter((c) => c.ready);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Wait until no frame has arrived for quietMs (at most maxMs).
async function quiet(quietMs, maxMs) {
  const t0 = now();
  let last = counters.frames;
  let lastChange = now();
  while (now() - t0 < maxMs) {
    await sleep(50);
    if (counters.frames !== last) {
      last = counters.frames;
      lastChange = now();
    } else if (now() - lastChange >= quietMs) break;
  }
  return {
    seconds: (now() - t0) / 1000,
    untilLast: Math.max(0, lastChange - t0) / 1000, // when the last frame came
    timedOut: now() - lastChange < quietMs,
    frames: counters.frames,
  };
}

// -- load: an open loop at a fixed offered rate -----------------------------------------

function openLoop(rate, seconds, sendOne) {
  return new Promise((resolve) => {
    const total = Math.max(1, Math.round(rate * seconds));
    const t0 = now();
    let sent = 0;
    const timer = setInterval(() => {
      const due = Math.min(total, Math.floor((rate * (now() - t0)) / 1000) + 1);
      while (sent < due) sendOne(sent++);
      if (sent >= total) {
        clearInterval(timer);
        resolve({ sent, seconds: (now() - t0) / 1000 });
      }
    }, 1);
  });
}

async function drain(st, expected, maxMs) {
  const t0 = now();
  while (st.received < expected && now() - t0 < maxMs) await sleep(10);
  // Stragglers past the expected count would be duplicates; give them a moment.
  return (now() - t0) / 1000;
}

function stepResult(st, expected, load, drainSeconds, cpu0, extra) {
  const cpu = process.cpuUsage(cpu0);
  const wall = load.seconds + drainSeconds;
  return Object.assign(
    {
      sent: load.sent,
      sendSeconds: load.seconds,
      expected,
      received: st.received,
      lost: Math.max(0, expected - st.received),
      deliveredPerSec: st.received / load.seconds,
      latency: st.hist.summary(),
      ack: st.ackHist.summary(),
      clientCpu: (cpu.user + cpu.system) / 1e6 / wall,
      acks: counters.acks,
      errors: counters.errors,
      errorSamples: counters.errorSamples.slice(),
      closes: counters.closes,
      closeSamples: counters.closeSamples.slice(),
    },
    extra || {},
  );
}

function resetCounters() {
  counters.acks = 0;
  counters.errors = 0;
  counters.errorSamples = [];
  counters.closes = 0;
  counters.closeSamples = [];
}

function wsSendPayload(to, text, ref) {
  if (SIO) return `42["send",${JSON.stringify({ to, message_text: text })}]`;
  return JSON.stringify({ type: 'send', to, message_text: text, ref });
}

// Fan-out: `rate` messages a second to the group, from `senders` members in turn.
async function fanout(c) {
  const set = sets.get(c.set);
  const members = openConns(set).length;
  const senders = c.senders.map((u) => set.get(u)).filter((x) => x && x.ready);
  resetCounters();
  const st = newStep();
  const cpu0 = process.cpuUsage();
  let skipped = 0;
  const load = await openLoop(c.rate, c.seconds, (i) => {
    const conn = senders[i % senders.length];
    if (!conn || !conn.sendText(wsSendPayload(c.to, marker(st, i, 0), i))) skipped++;
  });
  const expected = (load.sent - skipped) * members;
  const d = await drain(st, expected, c.drainMs);
  return stepResult(st, expected, load, d, cpu0, { members, senders: senders.length, skipped });
}

function partner(user, base) {
  return (user - base) % 2 === 0 ? user + 1 : user - 1;
}

// 1:1 over websocket frames: each message from the next user in turn to its partner.
async function direct(c) {
  const set = sets.get(c.set);
  const users = openConns(set).map((x) => x.user);
  const ready = new Set(users);
  resetCounters();
  const st = newStep();
  const cpu0 = process.cpuUsage();
  let skipped = 0;
  const load = await openLoop(c.rate, c.seconds, (i) => {
    const from = users[(i * 7919) % users.length];
    const to = partner(from, c.base);
    const conn = set.get(from);
    if (!ready.has(to) || !conn.sendText(wsSendPayload(`${to}_User`, marker(st, i, to), i))) skipped++;
  });
  const expected = load.sent - skipped;
  const d = await drain(st, expected, c.drainMs);
  return stepResult(st, expected, load, d, cpu0, { users: users.length, skipped });
}

// 1:1 through HTTP POSTs on keep-alive connections; `mode` "closed" (N workers, each
// sending as soon as its previous answer came) or "open" (a fixed offered rate).
// `path` (default: the server's send route) and `deliver: false` (nothing to wait for:
// a route that only answers) measure another route with the same requests.
async function httpSends(c) {
  const set = sets.get(c.set);
  const users = openConns(set).map((x) => x.user);
  resetCounters();
  const st = newStep();
  const resp = new Hist();
  const agent = new http.Agent({ keepAlive: true, maxSockets: c.concurrency, maxFreeSockets: c.concurrency });
  const statuses = {};
  let issued = 0;
  let answered = 0;
  let failedRequests = 0;
  const cpu0 = process.cpuUsage();
  function post(i, done) {
    const from = users[(i * 7919) % users.length];
    const to = partner(from, c.base);
    const body = JSON.stringify({ to: `${to}_User`, message_text: marker(st, i, to) });
    const t0 = now();
    issued++;
    const req = http.request(
      {
        host: cfg.host,
        port: cfg.port,
        method: 'POST',
        path: c.path || HTTP_PATH,
        agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'X-Bench-User': String(from) },
      },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => {
          answered++;
          resp.add(now() - t0);
          statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
          if (done) done();
        });
      },
    );
    req.on('socket', (s) => s.setNoDelay(true));
    req.on('error', (e) => {
      failedRequests++;
      statuses[e.code || 'error'] = (statuses[e.code || 'error'] || 0) + 1;
      if (done) done();
    });
    req.end(body);
  }
  let load;
  if (c.mode === 'closed') {
    const t0 = now();
    const stopAt = t0 + c.seconds * 1000;
    let i = 0;
    load = await new Promise((resolve) => {
      let workers = c.concurrency;
      const loop = () => {
        if (now() >= stopAt) {
          if (--workers === 0) resolve({ sent: issued, seconds: (now() - t0) / 1000 });
          return;
        }
        post(i++, loop);
      };
      for (let w = 0; w < c.concurrency; w++) loop();
    });
  } else {
    load = await openLoop(c.rate, c.seconds, (i) => post(i, null));
    const t0 = now();
    while (answered + failedRequests < issued && now() - t0 < c.drainMs) await sleep(10);
  }
  // Every accepted send is delivered once.
  const expected = c.deliver === false ? 0 : statuses[c.okStatus] || 0;
  const d = await drain(st, expected, c.drainMs);
  agent.destroy();
  return stepResult(st, expected, load, d, cpu0, {
    users: users.length,
    concurrency: c.concurrency,
    requests: issued,
    answered,
    statuses,
    answeredPerSec: answered / load.seconds,
    response: resp.summary(),
  });
}

// Navigation churn: `churners` of the set each leave and come back every `periodMs`
// (staggered: a steady rate of churners / period), for `seconds`, as a page load does
// in an app where every page opens its own websocket; `gapMs` between the close and the
// open. The set's other connections observe: each tracks the presence changes it is
// told (see trackPresence). Waits for the last reconnects, then for quiet.
async function churn(c) {
  const set = sets.get(c.set);
  const churners = c.churners.filter((u) => set.has(u));
  const churning = new Set(churners);
  const observers = openConns(set).filter((x) => !churning.has(x.user));
  for (const o of observers) o.track = new Map();
  resetCounters();
  resetPresence();
  const hist = new Hist();
  const reasons = {};
  const busy = new Set();
  let done = 0;
  let failed = 0;
  let skipped = 0;
  const cpu0 = process.cpuUsage();
  const open = (user) => {
    const t0 = now();
    set.set(
      user,
      new Conn(user, (x, ok, reason) => {
        busy.delete(user);
        if (ok) {
          done++;
          hist.add(now() - t0);
        } else {
          failed++;
          const key = String(reason).slice(0, 80);
          reasons[key] = (reasons[key] || 0) + 1;
        }
      }),
    );
  };
  const rate = churners.length / (c.periodMs / 1000);
  const load = await openLoop(rate, c.seconds, (i) => {
    const user = churners[i % churners.length];
    if (busy.has(user)) {
      skipped++; // its previous reconnect has not finished: slower than the period
      return;
    }
    busy.add(user);
    set.get(user).goAway();
    if (c.gapMs > 0) setTimeout(() => open(user), c.gapMs);
    else open(user);
  });
  const t1 = now();
  while (busy.size && now() - t1 < c.timeoutMs) await sleep(10);
  const pendingAtEnd = busy.size;
  const q = await quiet(c.quietMs, c.maxQuietMs);
  // Left believing a connected churner is offline: a lost or reordered online.
  let staleOffline = 0;
  for (const o of observers) {
    for (const [user, online] of o.track) if (!online && set.get(user) && set.get(user).ready) staleOffline++;
    o.track = null;
  }
  const cpu = process.cpuUsage(cpu0);
  return {
    churners: churners.length,
    observers: observers.length,
    periodMs: c.periodMs,
    offeredPerSec: rate,
    sendSeconds: load.seconds,
    started: load.sent - skipped,
    reconnects: done,
    failed,
    reasons,
    skipped,
    pendingAtEnd,
    perSec: done / load.seconds,
    latency: hist.summary(),
    quietSeconds: q.seconds,
    presence: Object.assign({}, presence, { staleOffline }),
    clientCpu: (cpu.user + cpu.system) / 1e6 / ((now() - t1) / 1000 + load.seconds),
    closes: counters.closes,
    closeSamples: counters.closeSamples.slice(),
    errors: counters.errors,
    errorSamples: counters.errorSamples.slice(),
  };
}

// Websocket ping to a sample of connections: how many answer within timeoutMs.
function probe(c) {
  const conns = openConns(sets.get(c.set));
  const sample = [];
  const step = Math.max(1, Math.floor(conns.length / c.sample));
  for (let i = 0; i < conns.length && sample.length < c.sample; i += step) sample.push(conns[i]);
  return new Promise((resolve) => {
    let answered = 0;
    const t0 = now();
    const timer = setTimeout(finish, c.timeoutMs);
    function finish() {
      clearTimeout(timer);
      for (const x of sample) x.onPong = null;
      resolve({ open: conns.length, probed: sample.length, answered, seconds: (now() - t0) / 1000 });
    }
    if (!sample.length) return finish();
    for (const x of sample) {
      x.onPong = (conn) => {
        conn.onPong = null;
        if (++answered === sample.length) finish();
      };
      x.write(Buffer.from('probe'), 0x89);
    }
  });
}

// -- commands ---------------------------------------------------------------------------

function range(from, count) {
  const out = new Array(count);
  for (let i = 0; i < count; i++) out[i] = from + i;
  return out;
}

async function handle(c) {
  switch (c.cmd) {
    case 'connect': {
      if (!sets.has(c.set)) sets.set(c.set, new Map());
      const r = await openMany(range(c.from, c.count), c.concurrency, c.timeoutMs, sets.get(c.set));
      return r;
    }
    case 'reconnect': {
      const set = sets.get(c.set);
      const missing = [...set.values()].filter((x) => !x.ready).map((x) => x.user);
      return openMany(missing, c.concurrency, c.timeoutMs, set);
    }
    case 'count':
      return { open: openConns(sets.get(c.set) || new Map()).length };
    case 'quiet':
      return quiet(c.quietMs, c.maxMs);
    case 'fanout':
      return fanout(c);
    case 'direct':
      return direct(c);
    case 'http':
      return httpSends(c);
    case 'probe':
      return probe(c);
    case 'churn':
      return churn(c);
    case 'presence': {
      const out = Object.assign({}, presence);
      if (c.reset) resetPresence();
      return out;
    }
    case 'close': {
      const set = sets.get(c.set);
      let n = 0;
      if (set) {
        for (const x of set.values()) {
          x.destroy();
          n++;
        }
        sets.delete(c.set);
      }
      return { closed: n };
    }
    case 'exit':
      setTimeout(() => process.exit(0), 10);
      return { bye: true };
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on('line', (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let out;
    try {
      out = { ok: true, result: await handle(JSON.parse(line)) };
    } catch (e) {
      out = { ok: false, error: String((e && e.stack) || e) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  });
});
rl.on('close', () => process.exit(0));
process.stdout.write(JSON.stringify({ ok: true, result: { started: true, pid: process.pid } }) + '\n');
