/* flask-chat client: rebuilds the chat windows from the bootstrap data on every page,
 * keeps a websocket to /chats/ws (jittered exponential reconnect, catch-up from the
 * highest message id it has), shows who is online, typing and unread counts, keeps
 * windows in sync across tabs, hides (never removes) closed windows, and renders every
 * text with textContent only. No build step, no dependencies.
 *
 * Sending is safe to repeat: every outgoing message gets an idempotency key, and a send
 * that fails for want of an answer (network error, 5xx, the socket cut before the ack,
 * no ack in time) is retried with the same key, so the server stores it once.
 * Messages are kept in id order whatever order they arrive in (live frames can come out
 * of order across instances; see docs/protocol.md).
 * Where websockets are blocked (a proxy refusing the upgrade: two attempts in a row
 * fail before the server's hello), it long-polls /chats/poll from the same position
 * instead, sends over POST /chats/send_message, and tries the websocket again now and
 * then; typing notices and read marks are not sent meanwhile.
 *
 * Public API: window.FlaskChat.open(key), .close(key), .minimise(key), .send(key, text),
 * .on(event, handler) with events "message", "presence", "connection" and "error";
 * .online (a set of user ids), .connected (boolean: the websocket is up),
 * .transport ("websocket", "longpoll" or null).
 */
(function () {
  "use strict";

  var boot = document.getElementById("flask-chat-bootstrap");
  if (!boot) { return; }
  var data = JSON.parse(boot.textContent);
  var me = data.user;
  var people = data.people || {};
  var groups = data.groups || {};
  var windows = {};        // conversation key -> window record
  var handlers = {};       // event name -> [functions]
  var dock;
  var position = data.position || "";  // highest message id this page has
  var online = {};         // user id -> true
  var socket = null;
  var connected = false;
  var attempts = 0;
  var useToken = true;
  var loggedOut = false;
  var pending = {};        // ref -> {resolve, reject}
  var nextRef = 1;
  var onlinePanel = null;
  // Waits before each retry of a send in doubt (then give up): about 25 s in all.
  var RETRY_DELAYS = [300, 1000, 2000, 4000, 8000, 10000];
  var ACK_TIMEOUT = 10000;  // ms without an ack before a send counts as in doubt
  var wsFailures = 0;      // websocket attempts in a row that never got the hello
  var polling = false;     // long-polling /chats/poll (websockets blocked)
  var pollAttempts = 0;

  function emit(name, detail) {
    (handlers[name] || []).forEach(function (fn) { fn(detail); });
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function parseKey(key) {
    var m = /^([1-9][0-9]*)_(User|Group)$/.exec(key);
    return m ? { id: m[1], kind: m[2] } : null;
  }

  function titleOf(key) {
    var k = parseKey(key);
    if (!k) { return key; }
    var who = k.kind === "Group" ? groups[k.id] : people[k.id];
    return who ? who.name : key;
  }

  function nameOf(userId) {
    if (String(userId) === String(me.id)) { return me.name; }
    var p = people[String(userId)];
    return p ? p.name : "user " + userId;
  }

  function request(method, url, body, headers) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    Object.keys(headers || {}).forEach(function (name) { opts.headers[name] = headers[name]; });
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = data.csrf_token;
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts).then(function (resp) {
      // A proxy's error page (a 502 from HAProxy) is not JSON: keep the status.
      return resp.text().then(function (text) {
        var json = null;
        try { json = JSON.parse(text); } catch (e) { json = null; }
        if (!resp.ok || json === null) {
          var err = new Error((json && json.message) || resp.statusText || "bad answer");
          err.code = json && json.error;
          err.status = resp.status;
          throw err;
        }
        return json;
      });
    }, function (cause) {
      var err = new Error("network error: " + cause.message);
      err.network = true;
      throw err;
    });
  }

  function newKey() {
    // 128 random bits as hex: a valid idempotency key (getRandomValues works on http too).
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function inDoubt(err) {
    // No answer, or the server failed: the message may or may not be stored. Anything
    // else (a 4xx, an error frame) is a real answer and retrying cannot change it.
    return Boolean(err.network) || (err.status !== undefined && err.status >= 500);
  }

  function sendOnce(key, text, idem) {
    if (connected) {
      return wsRequest({ type: "send", to: key, message_text: text, key: idem }, ACK_TIMEOUT)
        .then(function (ack) { return ack.message; });
    }
    return request("POST", data.urls.send_message, { to: key, message_text: text },
                   { "Idempotency-Key": idem });
  }

  function sendWithRetry(key, text, idem, attempt) {
    return sendOnce(key, text, idem).then(null, function (err) {
      if (!inDoubt(err) || attempt >= RETRY_DELAYS.length) { throw err; }
      emit("retry", { conversation: key, key: idem, attempt: attempt + 1, error: err });
      return new Promise(function (resolve) {
        setTimeout(resolve, RETRY_DELAYS[attempt] * (0.75 + Math.random() / 2));
      }).then(function () { return sendWithRetry(key, text, idem, attempt + 1); });
    });
  }

  function saveState(key, state) {
    windows[key].state = state;
    request("POST", data.urls.windows, { conversation: key, state: state }).catch(function (err) {
      emit("error", err);
    });
  }

  function ensureDock() {
    if (!dock) {
      dock = el("div", "fc-dock");
      dock.setAttribute("aria-label", "Chat windows");
      document.body.appendChild(dock);
    }
    return dock;
  }

  function addMessage(key, message) {
    var win = windows[key];
    if (!win || win.ids[message.id]) { return false; }
    win.ids[message.id] = true;
    if (message.id > position) { position = message.id; }
    var mine = String(message.sender_id) === String(me.id);
    var row = el("div", "fc-message " + (mine ? "fc-sent" : "fc-received"));
    row.setAttribute("data-id", message.id);
    if (message.image) {
      var img = el("img");
      img.src = message.image;
      img.alt = "";
      row.appendChild(img);
    }
    var bubble = el("div", "fc-text", message.message_text);
    bubble.title = nameOf(message.sender_id) + " \u2014 " + (message.sent_at || "");
    row.appendChild(bubble);
    // Keep id order even when a message arrives late (ids sort in time order).
    var next = null;
    var rows = win.body.children;
    for (var i = rows.length - 1; i >= 0; i--) {
      if (rows[i].getAttribute("data-id") > message.id) { next = rows[i]; } else { break; }
    }
    win.body.insertBefore(row, next);
    if (!next) { win.body.scrollTop = win.body.scrollHeight; }
    return true;
  }

  function createWindow(key, state, messages) {
    var win = {
      key: key, state: state, ids: {},
      root: el("section", "fc-window"),
      body: el("div", "fc-body"),
      error: el("div", "fc-error"),
      typing: el("div", "fc-typing"),
      unread: el("span", "fc-unread"),
    };
    windows[key] = win;
    win.root.setAttribute("data-conversation", key);
    var header = el("header", "fc-header");
    header.appendChild(el("span", "fc-title", titleOf(key)));
    header.appendChild(win.unread);
    var minimise = el("button", "fc-minimise", "\u2013");
    minimise.type = "button";
    minimise.title = "Minimise";
    var close = el("button", "fc-close", "\u00d7");
    close.type = "button";
    close.title = "Close";
    header.appendChild(minimise);
    header.appendChild(close);
    var form = el("form", "fc-form");
    var input = el("textarea");
    input.name = "message_text";
    input.maxLength = data.settings.max_message_length;
    input.placeholder = "Write a message\u2026";
    form.appendChild(input);
    win.input = input;
    win.root.appendChild(header);
    win.root.appendChild(win.body);
    win.root.appendChild(win.typing);
    win.root.appendChild(win.error);
    win.root.appendChild(form);
    ensureDock().appendChild(win.root);

    header.addEventListener("click", function (ev) {
      if (ev.target === close) { api.close(key); return; }
      api.minimise(key, win.state !== "minimised");
    });
    input.addEventListener("input", function () { noteTyping(key); });
    input.addEventListener("keydown", function (ev) {
      // Not while an input method is composing: its Enter confirms the composition.
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        form.dispatchEvent(new Event("submit", { cancelable: true }));
      }
    });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var text = input.value;
      if (!text.trim()) { return; }
      // Take the text out of the box at once, so that a second Enter before the answer
      // cannot send it twice; give it back if it was not sent (unless the box has new
      // text by then).
      input.value = "";
      delete typingSent[key];  // typing again right after sending is news again
      api.send(key, text).then(null, function () {
        if (!input.value) { input.value = text; }
      });
    });
    (messages || []).forEach(function (m) { addMessage(key, m); });
    applyState(win);
    return win;
  }

  function applyState(win) {
    var wasShown = win.shown;
    win.shown = win.state === "open";
    win.root.hidden = win.state === "hidden";
    win.root.classList.toggle("fc-minimised", win.state === "minimised");
    // A hidden or minimised body has no layout, so it could not keep up with the
    // messages that arrived meanwhile: show the newest when the window opens again.
    if (win.shown && !wasShown) { win.body.scrollTop = win.body.scrollHeight; }
    if (win.state === "open" && win.unread.textContent) {
      var last = win.body.lastElementChild;
      if (last) { markRead(win.key, last.getAttribute("data-id")); } else { win.unread.textContent = ""; }
    }
  }

  function loadConversation(key) {
    var url = data.urls.conversations + encodeURIComponent(key) + "?limit=" + data.settings.page_size;
    return request("GET", url).then(function (page) {
      page.messages.slice().reverse().forEach(function (m) { addMessage(key, m); });
    });
  }

  var api = {
    data: data,
    windows: windows,
    on: function (name, fn) { (handlers[name] = handlers[name] || []).push(fn); },
    open: function (key) {
      if (!parseKey(key)) { throw new Error("not a conversation key: " + key); }
      var win = windows[key];
      if (!win) {
        win = createWindow(key, "open", []);
        loadConversation(key).catch(function (err) { win.error.textContent = err.message; });
      }
      win.state = "open";
      applyState(win);
      saveState(key, "open");
      win.input.focus();
      return win;
    },
    close: function (key) {
      var win = windows[key];
      if (!win) { return; }
      win.state = "hidden";
      applyState(win);
      saveState(key, "hidden");
    },
    minimise: function (key, yes) {
      var win = windows[key];
      if (!win) { return; }
      win.state = yes === false ? "open" : "minimised";
      applyState(win);
      saveState(key, win.state);
    },
    send: function (key, text) {
      var win = windows[key] || api.open(key);
      win.error.textContent = "";
      return sendWithRetry(key, text, newKey(), 0).then(
        function (message) {
          addMessage(key, message);
          emit("message", { conversation: key, message: message });
          return message;
        },
        function (err) {
          win.error.textContent = err.message;
          emit("error", err);
          throw err;
        }
      );
    },
    receive: function (key, message) {
      // An incoming message: a closed window reopens (as the legacy chat did), and a
      // window that is not open and visible counts it as unread.
      var mine = String(message.sender_id) === String(me.id);
      var win = windows[key];
      if (!win) {
        win = createWindow(key, "open", []);
        if (!mine) { saveState(key, "open"); }
      } else if (win.state === "hidden" && !mine) {
        win.state = "open";
        applyState(win);
        saveState(key, "open");
      }
      var added = addMessage(key, message);
      if (added && !mine && win.typingUser === String(message.sender_id)) {
        clearTyping(win);  // they stopped typing: here is what they typed
      }
      if (added && !mine) {
        if (win.state !== "open" || document.hidden) {
          win.unread.textContent = String((parseInt(win.unread.textContent, 10) || 0) + 1);
        } else {
          // Read up to the newest message shown: one that arrives late (a lower id,
          // inserted above others) must not move the read mark back.
          markRead(key, win.body.lastElementChild.getAttribute("data-id"));
        }
      }
      if (added) { emit("message", { conversation: key, message: message }); }
      return added;
    },
    get online() { return Object.keys(online).map(Number); },
    get connected() { return connected; },
    get transport() { return connected ? "websocket" : (polling ? "longpoll" : null); },
  };

  // -- real time ------------------------------------------------------------------

  function keyFor(frame) {
    // Message-like frames are side-neutral: work out the conversation as I see it.
    if (String(frame.sender_id !== undefined ? frame.sender_id : frame.user_id) === String(me.id)) {
      return frame.to;
    }
    if (/_Group$/.test(frame.to)) { return frame.to; }
    return (frame.sender_id !== undefined ? frame.sender_id : frame.user_id) + "_User";
  }

  function wsSend(frame) {
    if (socket && connected) { socket.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function wsRequest(frame, timeout) {
    return new Promise(function (resolve, reject) {
      var ref = "r" + (nextRef++);
      var timer = null;
      frame.ref = ref;
      function settle(fn) {
        return function (value) { clearTimeout(timer); delete pending[ref]; fn(value); };
      }
      pending[ref] = { resolve: settle(resolve), reject: settle(reject) };
      if (timeout) {
        timer = setTimeout(function () {
          var err = new Error("no answer in time");
          err.network = true;
          pending[ref].reject(err);
        }, timeout);
      }
      if (!wsSend(frame)) {
        var err = new Error("not connected");
        err.network = true;
        pending[ref].reject(err);
      }
    });
  }

  // -- legacy Juggernaut channels (the host app decides who may read which) ------

  var legacySubs = {};     // channel -> [callbacks]
  var legacyMeta;          // undefined until set, as with Juggernaut

  function resubscribeLegacy() {
    if (legacyMeta !== undefined) { wsSend({ type: "meta", data: legacyMeta }); }
    Object.keys(legacySubs).forEach(function (channel) {
      wsSend({ type: "subscribe", channel: channel });
    });
  }

  api.juggernaut = {
    // Like Juggernaut's jug.subscribe(channel, cb): cb(data, message) per message.
    subscribe: function (channel, cb) {
      var first = !legacySubs[channel];
      (legacySubs[channel] = legacySubs[channel] || []).push(cb);
      if (first) { wsSend({ type: "subscribe", channel: channel }); }
    },
    unsubscribe: function (channel) {
      delete legacySubs[channel];
      wsSend({ type: "unsubscribe", channel: channel });
    },
    meta: function (data) { legacyMeta = data; wsSend({ type: "meta", data: data }); },
    event: function (data) { return wsSend({ type: "event", data: data }); },
  };

  function markRead(key, id) {
    var win = windows[key];
    if (win) { win.unread.textContent = ""; win.lastRead = id; }
    wsSend({ type: "read", to: key, id: id });
  }

  var typingSent = {};
  function noteTyping(key) {
    var now = Date.now();
    if (!typingSent[key] || now - typingSent[key] > 2000) {
      typingSent[key] = now;
      wsSend({ type: "typing", to: key });
    }
  }

  function showTyping(key, userId) {
    var win = windows[key];
    if (!win) { return; }
    win.typingUser = String(userId);
    win.typing.textContent = nameOf(userId) + " is typing\u2026";
    clearTimeout(win.typingTimer);
    win.typingTimer = setTimeout(function () { clearTyping(win); }, 3000);
  }

  function clearTyping(win) {
    clearTimeout(win.typingTimer);
    win.typingUser = null;
    win.typing.textContent = "";
  }

  function renderOnline() {
    if (!onlinePanel) {
      onlinePanel = el("aside", "fc-online");
      onlinePanel.appendChild(el("h2", null, "Online"));
      onlinePanel.appendChild(el("ul"));
      document.body.appendChild(onlinePanel);
    }
    var list = onlinePanel.querySelector("ul");
    while (list.firstChild) { list.removeChild(list.firstChild); }
    Object.keys(online).sort(function (a, b) { return nameOf(a).localeCompare(nameOf(b)); })
      .forEach(function (id) {
        var item = el("li", null, nameOf(id));
        item.setAttribute("data-user-id", id);
        item.setAttribute("data-chat-open", id + "_User");
        list.appendChild(item);
      });
  }

  function reloadHistory() {
    return request("GET", data.urls.history).then(function (history) {
      Object.keys(history).forEach(function (key) {
        if (!windows[key]) { createWindow(key, "hidden", []); }
        history[key].messages.forEach(function (m) { addMessage(key, m); });
      });
    });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "hello":
        attempts = 0;
        connected = true;
        resubscribeLegacy();
        emit("connection", { connected: true });
        break;
      case "juggernaut":
        (legacySubs[frame.message.channel] || []).forEach(function (cb) {
          cb(frame.message.data, frame.message);
        });
        emit("juggernaut", frame.message);
        break;
      case "message":
        api.receive(keyFor(frame), {
          message_text: frame.message_text,
          type: String(frame.sender_id) === String(me.id) ? "sent" : "received",
          image: frame.image, id: frame.id, sender_id: frame.sender_id, sent_at: frame.sent_at,
        });
        break;
      case "ack":
      case "error":
        var waiter = frame.ref !== undefined && pending[frame.ref];
        if (waiter) {
          delete pending[frame.ref];
          if (frame.type === "ack") { waiter.resolve(frame); }
          else {
            var err = new Error(frame.message);
            err.code = frame.error;
            waiter.reject(err);
          }
        } else if (frame.type === "error") { emit("error", frame); }
        break;
      case "catchup":
        if (!frame.recovered) { reloadHistory().catch(function (e) { emit("error", e); }); }
        break;
      case "online":
        online = {};
        frame.users.forEach(function (id) { online[id] = true; });
        renderOnline();
        emit("presence", { online: api.online });
        break;
      case "presence":
        // One frame for a batch of changes; your own comings and goings are in it too.
        var changed = [];
        frame.online.forEach(function (id) {
          if (String(id) !== String(me.id) && !online[id]) { online[id] = true; changed.push([id, true]); }
        });
        frame.offline.forEach(function (id) {
          if (String(id) !== String(me.id) && online[id]) { delete online[id]; changed.push([id, false]); }
        });
        if (!changed.length) { break; }
        renderOnline();
        changed.forEach(function (c) { emit("presence", { user_id: c[0], online: c[1] }); });
        break;
      case "typing":
        if (String(frame.user_id) !== String(me.id)) { showTyping(keyFor(frame), frame.user_id); }
        break;
      case "read":
        if (String(frame.user_id) === String(me.id)) {
          var w = windows[frame.to];
          if (w) { w.unread.textContent = ""; }
        }
        break;
      case "window":
        var win = windows[frame.conversation] || createWindow(frame.conversation, frame.state, []);
        if (win.state !== frame.state) {
          win.state = frame.state;
          applyState(win);
          if (frame.state !== "hidden" && !Object.keys(win.ids).length) {
            loadConversation(frame.conversation).catch(function () {});
          }
        }
        break;
      case "reconnect":
        // This instance is going away; come back (to another) soon, not after a backoff.
        attempts = 0;
        break;
    }
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + location.host + data.urls.websocket + "?after=" + encodeURIComponent(position);
    if (useToken && data.ws_token) { url += "&token=" + encodeURIComponent(data.ws_token); }
    var ws;
    try { ws = new WebSocket(url); } catch (e) { scheduleReconnect(); return; }
    socket = ws;
    var greeted = false;
    ws.onmessage = function (ev) {
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame.type === "hello") {
        greeted = true;
        loggedOut = false;
        wsFailures = 0;
        stopPolling();  // websockets work (again): the in-flight poll is dropped
      }
      onFrame(frame);
    };
    ws.onclose = function (ev) {
      if (socket !== ws) { return; }
      socket = null;
      var was = connected;
      connected = false;
      Object.keys(pending).forEach(function (ref) {
        var err = new Error("connection lost");
        err.network = true;  // a send may have been stored: it is retried with its key
        pending[ref].reject(err);
      });
      if (was) { emit("connection", { connected: false }); }
      // A token can expire on a long-open page; the session cookie still works.
      if (!greeted && useToken) { useToken = false; }
      if (ev && ev.code === 4401) {
        // The user logged out (maybe in another browser): every token is void now, and
        // only a session cookie that is still logged in can reconnect.
        useToken = false;
        loggedOut = true;
        emit("logout", {});
      } else if (!greeted && loggedOut) {
        return;  // this browser is logged out too: stop trying
      }
      if (!greeted) { wsFailures += 1; }
      if (!greeted && wsFailures >= 2 && data.urls.poll) {
        // Blocked, not just restarting: poll meanwhile, and try the websocket again
        // in a minute or so.
        startPolling();
        setTimeout(connect, 45000 + Math.random() * 30000);
        return;
      }
      scheduleReconnect();
    };
  }

  // -- the long-polling fallback ----------------------------------------------------

  function startPolling() {
    if (polling) { return; }
    polling = true;
    pollAttempts = 0;
    emit("connection", { connected: true, transport: "longpoll" });
    poll(true);
  }

  function stopPolling() {
    if (!polling) { return; }
    polling = false;
  }

  function poll(first) {
    if (!polling) { return; }
    var url = data.urls.poll + "?after=" + encodeURIComponent(position) + (first ? "&online=1" : "");
    request("GET", url).then(function (answer) {
      if (!polling) { return; }
      pollAttempts = 0;
      var out = false;
      answer.frames.forEach(function (frame) {
        if (frame.type === "logout") { out = true; return; }
        onFrame(frame);
      });
      if (answer.position > position) { position = answer.position; }
      if (out) {
        polling = false;
        loggedOut = true;
        useToken = false;
        emit("connection", { connected: false });
        emit("logout", {});
        return;
      }
      poll(false);
    }, function (err) {
      if (!polling) { return; }
      if (err.status === 401) {
        polling = false;
        loggedOut = true;
        emit("connection", { connected: false });
        emit("logout", {});
        return;
      }
      // Down or restarting: the same jittered backoff as the websocket's.
      var base = Math.min(30000, 500 * Math.pow(2, pollAttempts));
      pollAttempts += 1;
      setTimeout(function () { poll(first); }, base / 2 + Math.random() * base / 2);
    });
  }

  function scheduleReconnect() {
    // Jittered exponential backoff, capped at 30 s, so a restarted fleet is not stampeded.
    var base = Math.min(30000, 500 * Math.pow(2, attempts));
    attempts += 1;
    setTimeout(connect, base / 2 + Math.random() * base / 2);
  }

  function start() {
    var seen = {};
    (data.windows || []).forEach(function (w) {
      var conv = data.history[w.conversation];
      createWindow(w.conversation, w.state, conv ? conv.messages : []);
      seen[w.conversation] = true;
      if (!conv && w.state !== "hidden") {
        loadConversation(w.conversation).catch(function () {});
      }
    });
    // Conversations without a window state are kept, hidden, so reopening shows them.
    Object.keys(data.history).forEach(function (key) {
      if (!seen[key]) { createWindow(key, "hidden", data.history[key].messages); }
    });
    document.addEventListener("click", function (ev) {
      var target = ev.target.closest ? ev.target.closest("[data-chat-open]") : null;
      if (target) {
        ev.preventDefault();
        api.open(target.getAttribute("data-chat-open"));
      }
    });
    // Messages that came while the tab was in the background count as unread even in
    // open windows; once the tab is visible again they are read.
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { return; }
      Object.keys(windows).forEach(function (key) { applyState(windows[key]); });
    });
    if (window.WebSocket) { connect(); } else if (data.urls.poll) { startPolling(); }
  }

  window.FlaskChat = api;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
