"""The lean websocket connection (flask_chat.connection) against real clients: how it
ends, and what it refuses, on a real gevent server with real Redis."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis
import websocket
from helpers import Client, DemoServer, close_code, connect, login_cookie, wait_for

Start = Callable[..., DemoServer]


def server_descriptors(server: DemoServer, client: Client) -> int:
    """How many descriptors the server process holds on ``client``'s connection."""
    assert server.proc is not None
    client_port = client.ws.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
            if local == server.port and remote == client_port:
                inode = fields[9]
    if inode is None:
        return 0
    fd_dir = f"/proc/{server.proc.pid}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") == f"socket:[{inode}]":
                count += 1
        except OSError:
            continue  # closed while we looked
    return count


def test_a_websocket_holds_one_descriptor_and_none_once_closed(
    start: Start, clients: Any
) -> None:
    """The server must not keep the handshake's descriptor of a socket the websocket
    took over: that copy keeps the TCP connection open after the websocket closed it."""
    server = start()
    alice = connect(clients, server, "alice")
    assert server_descriptors(server, alice) == 1
    alice.send({"type": "window", "conversation": "2_User", "state": "huge"})  # refused
    alice.wait_type("error")
    assert server_descriptors(server, alice) == 1


def test_a_cut_slow_client_sees_the_end_and_catches_up(
    start: Start, clients: Any, r: redis.Redis
) -> None:
    """The server cuts a client that does not read; the client must see its connection
    end (not hang on a socket the server forgot), and a reconnect catches up on all."""
    server = start(CHAT_WS_MAX_QUEUE_BYTES=32 * 1024)
    slow = clients(
        server.port,
        login_cookie(server.port, "alice"),
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),),
    )
    slow.wait_type("hello")
    carol = connect(clients, server, "carol")
    sent: list[str] = []
    text = "y" * 1500
    conns = "chat:{u:1}:conns"
    i = 0
    while r.zcard(conns) and i < 3000:  # until the server has cut alice
        carol.send({"type": "send", "to": "1_User", "message_text": text, "ref": i})
        sent.append(carol.wait_type("ack", ref=i)["message"]["id"])
        i += 1
    wait_for(lambda: not r.zcard(conns), timeout=30, what="the server to cut the slow client")
    wait_for(lambda: server_descriptors(server, slow) == 0, timeout=10,
             what="the server to let go of the cut connection")
    # Now nothing else happens on the server. The client reads what reached it, then
    # must see the end of the connection.
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        while slow._recv_one(15):
            pass
        raise AssertionError("the cut client never saw its connection end")
    got = [f["id"] for f in slow.of_type("message")]
    assert got == sent[: len(got)] and len(got) < len(sent)
    # It reconnects from the last message it has and catches up on every other one.
    again = clients(
        server.port, login_cookie(server.port, "alice"), query=f"?after={got[-1]}"
    )
    done = again.wait_type("catchup", timeout=30)
    assert done["recovered"] is True
    assert got + [f["id"] for f in again.of_type("message")] == sent


def test_endless_empty_continuation_frames_are_refused(start: Start, clients: Any) -> None:
    """The size limit counts bytes; empty fragments cost memory too, so their number
    per message is capped (close 1009)."""
    server = start(CHAT_WS_MAX_FRAGMENTS=16)
    alice = connect(clients, server, "alice")
    ws = alice.ws
    ws.send_frame(websocket.ABNF.create_frame("", websocket.ABNF.OPCODE_TEXT, fin=0))
    try:
        for _ in range(200):
            ws.send_frame(websocket.ABNF.create_frame("", websocket.ABNF.OPCODE_CONT, fin=0))
    except (BrokenPipeError, ConnectionResetError, websocket.WebSocketException):
        pass  # the server may close while we are still sending
    assert close_code(ws) == 1009
    # Fragmented messages within the cap are still fine.
    bob = connect(clients, server, "bob")
    parts = ['{"type":', ' "ping"', "}"]
    bob.ws.send_frame(websocket.ABNF.create_frame(parts[0], websocket.ABNF.OPCODE_TEXT, fin=0))
    bob.ws.send_frame(websocket.ABNF.create_frame(parts[1], websocket.ABNF.OPCODE_CONT, fin=0))
    bob.ws.send_frame(websocket.ABNF.create_frame(parts[2], websocket.ABNF.OPCODE_CONT, fin=1))
    bob.wait_type("pong")
