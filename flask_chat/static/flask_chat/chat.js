/* flask-chat client: rebuilds the chat windows from the bootstrap data on every page,
 * sends with POST send_message, hides (never removes) closed windows, and renders
 * every text with textContent only. No build step, no dependencies.
 *
 * Public API: window.FlaskChat.open(key), .close(key), .minimise(key), .send(key, text),
 * .on(event, handler) with events "message" and "error".
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

  function request(method, url, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = data.csrf_token;
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts).then(function (resp) {
      return resp.json().then(function (json) {
        if (!resp.ok) {
          var err = new Error(json.message || resp.statusText);
          err.code = json.error;
          err.status = resp.status;
          throw err;
        }
        return json;
      });
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
    input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey) {
        ev.preventDefault();
        form.dispatchEvent(new Event("submit", { cancelable: true }));
      }
    });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var text = input.value;
      if (!text.trim()) { return; }
      api.send(key, text).then(function () { input.value = ""; }, function () {});
    });
    (messages || []).forEach(function (m) { addMessage(key, m); });
    applyState(win);
    return win;
  }

  function applyState(win) {
    win.root.hidden = win.state === "hidden";
    win.root.classList.toggle("fc-minimised", win.state === "minimised");
    if (win.state === "open") { win.unread.textContent = ""; }
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
      return request("POST", data.urls.send_message, { to: key, message_text: text }).then(
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
      // Used by the real-time layer: show an incoming message, opening a hidden window.
      var win = windows[key] || createWindow(key, "open", []);
      var added = addMessage(key, message);
      if (added && win.state !== "open" && String(message.sender_id) !== String(me.id)) {
        win.unread.textContent = String((parseInt(win.unread.textContent, 10) || 0) + 1);
      }
      if (added) { emit("message", { conversation: key, message: message }); }
      return added;
    },
  };

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
  }

  window.FlaskChat = api;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
