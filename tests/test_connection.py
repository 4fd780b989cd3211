"""The workers' connection protocol (webhook.server.Connection) held to its bounds, over real TLS
with verification on: a head over MAX_HEADER_BYTES is answered 431; a client that stalls — before
its first request, in its head, in its body, between requests — is closed after READ_TIMEOUT; a
request whose body has arrived is the app's, however long the app takes.

The protocol is served here in this process, on its own event loop in a thread, so that the read
timeout can be shortened (a worker's is 60 s); `tests/test_server.py` serves it in `podmutate serve`.
"""

import asyncio
import contextlib
import socket
import ssl
import threading
import time

import pytest
import uvloop
from uvicorn.config import Config as UvicornConfig
from uvicorn.server import ServerState

from certs import CA
from tools.harness.processes import wait_for
from webhook import server as serving
from webhook.tls import server_context

pytestmark = pytest.mark.served

TIMEOUT = 0.5  # the read timeout these tests serve with
SLOW_APP_SECONDS = 3 * TIMEOUT


async def app(scope, receive, send):
    """Reads the whole body, then answers it back; /slow first waits SLOW_APP_SECONDS."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(SLOW_APP_SECONDS)
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pair")
    ca = CA.create()
    pair = ca.issue("127.0.0.1")
    (directory / "tls.crt").write_bytes(pair.cert_pem())
    (directory / "tls.key").write_bytes(pair.key_pem())
    (directory / "ca.crt").write_bytes(ca.cert_pem())
    return directory


@pytest.fixture
def port(tls_files, monkeypatch):
    """The protocol served on 127.0.0.1 with a read timeout of TIMEOUT; yields the port."""
    monkeypatch.setattr(serving, "READ_TIMEOUT", TIMEOUT)
    loop = uvloop.new_event_loop()
    config = UvicornConfig(app, http=serving.Connection, lifespan="off", log_config=None, access_log=False)
    config.load()
    context = server_context(str(tls_files / "tls.crt"), str(tls_files / "tls.key"), serving.ALPN_PROTOCOLS)
    state = ServerState()
    listener = loop.run_until_complete(
        loop.create_server(lambda: serving.Connection(config, state, {}, _loop=loop), "127.0.0.1", 0, ssl=context)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        listener.close()


@contextlib.contextmanager
def connected(port, tls_files):
    context = ssl.create_default_context(cafile=str(tls_files / "ca.crt"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            yield sock


def read_all(sock):
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_by_server_within(sock, seconds):
    """True when the server closes the connection within `seconds`, having sent nothing."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError):
        return True


def test_a_head_over_the_limit_is_answered_431_and_closed(port, tls_files):
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        for _ in range(serving.MAX_HEADER_BYTES // len(filler) + 2):
            sock.sendall(filler)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"code":431' in answer and b"a request head is limited to 16384 bytes" in answer


def test_a_head_within_the_limit_is_served(port, tls_files):
    with connected(port, tls_files) as sock:
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n"
        sock.sendall(head + filler * (serving.MAX_HEADER_BYTES // len(filler) - 2) + b"\r\nok")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok")


def test_a_head_over_the_limit_in_one_write_is_answered_431(port, tls_files):
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    with connected(port, tls_files) as sock:
        sock.sendall(head + filler * (serving.MAX_HEADER_BYTES // len(filler) + 2) + b"\r\nok")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_head_over_the_limit_after_a_request_in_the_same_write_is_answered_431(port, tls_files):
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    first = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
    second = b"POST /echo HTTP/1.1\r\nHost: x\r\n" + filler * (serving.MAX_HEADER_BYTES // len(filler) + 2)
    with connected(port, tls_files) as sock:
        sock.sendall(first + second)
        answer = read_all(sock)
    assert b"HTTP/1.1 431 " in answer
    assert b"HTTP/1.1 200 " not in answer.split(b"HTTP/1.1 431 ")[1]


def test_a_large_body_and_the_next_head_in_one_write_are_served(port, tls_files):
    """Only head is counted against MAX_HEADER_BYTES: a body larger than it, followed in the same
    read by the start of the next request's head, is not a long head."""
    body = b"b" * (2 * serving.MAX_HEADER_BYTES)
    first = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    second = b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    with connected(port, tls_files) as sock:
        sock.sendall(first + second[:20])
        answer = b""
        while not answer.endswith(body):  # the first answered: the server has read to the end of the write
            chunk = sock.recv(65536)
            assert chunk, answer[:200]
            answer += chunk
        sock.sendall(second[20:])
        answer += read_all(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 2 and answer.endswith(b"\r\n\r\nok")


STALLS = {
    "before its first request": b"",
    "in its head": b"POST /echo HTTP/1.1\r\nHost: x\r\n",
    "in its body": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",
}


@pytest.mark.parametrize("stall", STALLS, ids=list(STALLS))
def test_a_client_that_stalls_is_closed_after_the_read_timeout(port, tls_files, stall):
    with connected(port, tls_files) as sock:
        sock.sendall(STALLS[stall])
        started = time.monotonic()
        assert closed_by_server_within(sock, 20 * TIMEOUT + 10)
        assert time.monotonic() - started >= TIMEOUT * 0.9  # not at once: it had its time


def test_an_idle_keep_alive_connection_is_closed_after_the_read_timeout(port, tls_files):
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        answer = b""
        while not answer.endswith(b"ok"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert closed_by_server_within(sock, 20 * TIMEOUT + 10)


def test_a_client_that_keeps_sending_is_not_cut_off(port, tls_files):
    """The timeout bounds a wait, not a request: a body trickled in over several timeouts is served."""
    pieces = 6
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % pieces)
        for _ in range(pieces):
            time.sleep(TIMEOUT / 2)
            sock.sendall(b"x")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"x" * pieces)


def test_a_request_whose_body_has_arrived_is_the_apps_however_long_it_takes(port, tls_files):
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"slow")


def test_connections_are_counted_from_handshake_to_close(port, tls_files):
    before = serving._open_connections
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert serving._open_connections == before + 1
    assert wait_for(lambda: serving._open_connections == before)


def test_pipelined_requests_are_answered_in_order(port, tls_files):
    with connected(port, tls_files) as sock:
        requests = [b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % index for index in range(3)]
        sock.sendall(b"".join(requests[:-1]) + requests[-1].replace(b"Host: x", b"Host: x\r\nConnection: close"))
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 3
    assert [answer.index(b"\r\n\r\n%d" % index) for index in range(3)] == sorted(
        answer.index(b"\r\n\r\n%d" % index) for index in range(3)
    )


def test_a_request_past_max_pipelined_is_answered_400_and_the_connection_closed(port, tls_files):
    """The first request keeps the app busy; MAX_PIPELINED more may wait behind it, and the one
    after is refused with a problem naming the limit — everything in one write, read at once."""
    waiting = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nw" * (serving.MAX_PIPELINED + 1)
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\ns" + waiting)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in answer
    assert f"at most {serving.MAX_PIPELINED} requests may wait on one connection".encode() in answer


def test_max_pipelined_requests_are_served(port, tls_files):
    waiting = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nw" * (serving.MAX_PIPELINED - 1)
    last = b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\nw"
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\ns" + waiting + last)
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 200 ") == serving.MAX_PIPELINED + 1
    assert b"HTTP/1.1 400 " not in answer


def test_a_flood_of_tiny_requests_is_cut_short_and_the_server_serves_on(port, tls_files):
    """5,000 requests in one stream, 290 KB: the server refuses the connection at the first
    request past MAX_PIPELINED, never answering the flood, and goes on serving."""
    flood = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" * 5000
    answer = b""
    with connected(port, tls_files) as sock:
        # the server may close while the flood is still being sent, and reset what it did not read
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            sock.sendall(flood)
            answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 200 ") <= serving.MAX_PIPELINED + 1
    assert answer == b"" or b"HTTP/1.1 400 Bad Request" in answer
    with connected(port, tls_files) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        assert read_all(sock).startswith(b"HTTP/1.1 200 ")
