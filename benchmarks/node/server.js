'use strict';
// The Node side of benchmarks/realtime.py: a minimal chat server on `ws` and Redis
// pub/sub, the baseline flask-chat is compared with. One process.
//
//   node server.js --port 5003 --redis-url redis://127.0.0.1:6379/0 --group-size 1000
//
// A client connects to /ws?user=<id> and receives {"type":"hello"} once its channels
// are subscribed. Its channels: its user's ("bench:u:<id>") and, for users
// 1..group-size, group 1's ("bench:g:1"). A websocket frame
// {"type":"send","to":"2_User"|"1_Group","message_text":...,"ref":...} is acked and
// published as one {"type":"message",...} event to the recipient's and the sender's
// channels (1:1) or to the group's channel; POST /send (X-Bench-User header, JSON
// body {"to","message_text"}) does the same over HTTP. Each process subscribes a
// channel once, whatever the number of local sockets on it, and writes the bytes
// Redis delivered to every local socket. No cache, no presence, no auth: the least a
// chat server does to deliver.

const http = require('http');
const { WebSocketServer } = require('ws');
const Redis = require('ioredis');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const HOST = arg('--host', '127.0.0.1');
const PORT = parseInt(arg('--port', '5003'), 10);
const REDIS_URL = arg('--redis-url', 'redis://127.0.0.1:6379/0');
const GROUP_SIZE = parseInt(arg('--group-size', '1000'), 10);
const GROUP = 1;

const pub = new Redis(REDIS_URL);
const sub = new Redis(REDIS_URL);
const rooms = new Map(); // channel -> Set of sockets
let seq = 0;

sub.on('messageBuffer', (channel, message) => {
  const members = rooms.get(channel.toString());
  if (!members) return;
  for (const ws of members) ws.send(message, { binary: false });
});

function userChannel(id) {
  return `bench:u:${id}`;
}

function join(ws, channels) {
  const fresh = [];
  for (const channel of channels) {
    let members = rooms.get(channel);
    if (!members) {
      members = new Set();
      rooms.set(channel, members);
      fresh.push(channel);
    }
    members.add(ws);
  }
  return fresh.length ? sub.subscribe(...fresh) : Promise.resolve();
}

function leave(ws, channels) {
  const gone = [];
  for (const channel of channels) {
    const members = rooms.get(channel);
    if (!members) continue;
    members.delete(ws);
    if (!members.size) {
      rooms.delete(channel);
      gone.push(channel);
    }
  }
  if (gone.length) sub.unsubscribe(...gone).catch(() => {});
}

// Publish one message; returns the event, or null when the target is refused.
function deliver(sender, to, text) {
  if (typeof to !== 'string' || typeof text !== 'string') return null;
  const sep = to.indexOf('_');
  const target = parseInt(to.slice(0, sep), 10);
  const kind = to.slice(sep + 1);
  if (!(target > 0)) return null;
  const now = Date.now();
  const event = JSON.stringify({
    type: 'message',
    id: `${now}-${seq++}`,
    sender_id: sender,
    to,
    message_text: text,
    image: null,
    sent_at: new Date(now).toISOString(),
  });
  if (kind === 'Group') {
    if (target !== GROUP || !(sender >= 1 && sender <= GROUP_SIZE)) return null;
    pub.publish(`bench:g:${GROUP}`, event);
  } else {
    pub.publish(userChannel(target), event);
    pub.publish(userChannel(sender), event);
  }
  return event;
}

function onHttp(req, res) {
  if (req.method !== 'POST' || req.url !== '/send') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const user = parseInt(req.headers['x-bench-user'], 10);
    let body = null;
    try {
      body = JSON.parse(Buffer.concat(chunks));
    } catch (e) {
      body = null;
    }
    const event = user > 0 && body ? deliver(user, body.to, body.message_text) : null;
    if (event === null) {
      res.writeHead(400, { 'Content-Type': 'application/json' }).end('{"error":"invalid"}');
      return;
    }
    res.writeHead(201, { 'Content-Type': 'application/json' }).end(event);
  });
}

const server = http.createServer(onHttp);
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });

wss.on('connection', (ws, req) => {
  const user = parseInt(new URL(req.url, 'http://localhost').searchParams.get('user'), 10);
  if (!(user > 0)) {
    ws.close(1008, 'user?');
    return;
  }
  const channels = [userChannel(user)];
  if (user <= GROUP_SIZE) channels.push(`bench:g:${GROUP}`);
  let open = true;
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (e) {
      ws.send('{"type":"error","error":"invalid_json"}');
      return;
    }
    if (frame.type === 'send') {
      const event = deliver(user, frame.to, frame.message_text);
      if (event === null) ws.send(JSON.stringify({ type: 'error', error: 'invalid', ref: frame.ref }));
      else ws.send(JSON.stringify({ type: 'ack', ref: frame.ref === undefined ? null : frame.ref }));
    } else if (frame.type === 'ping') {
      ws.send('{"type":"pong"}');
    }
  });
  ws.on('close', () => {
    open = false;
    leave(ws, channels);
  });
  ws.on('error', () => {});
  join(ws, channels).then(() => {
    if (open) ws.send(JSON.stringify({ type: 'hello', user_id: user }));
  });
});

server.listen(PORT, HOST, () => {
  console.log(`node ws benchmark server on ${HOST}:${PORT}`);
});
