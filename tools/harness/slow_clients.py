"""Slow and idle clients: connections that start a request and never finish it.

Four kinds, in equal numbers: a TCP connection that sends nothing, half a TLS ClientHello, a
TLS session with half its request headers, and a request whose body stops short.
"""

import contextlib
import socket
import ssl

KINDS = ("idle TCP", "half ClientHello", "half headers", "short body")


@contextlib.contextmanager
def slow_connections(port, ca_file, count=64, host="127.0.0.1"):
    """Hold `count` unfinished connections to the server while the block runs; yields how many opened."""
    held = []
    context = ssl.create_default_context(cafile=ca_file)
    try:
        for index in range(count):
            kind = KINDS[index % len(KINDS)]
            raw = socket.create_connection((host, port), timeout=10)
            if kind == "idle TCP":
                held.append(raw)
                continue
            if kind == "half ClientHello":
                raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a record header and a little more
                held.append(raw)
                continue
            tls = context.wrap_socket(raw, server_hostname=host)
            if kind == "half headers":
                tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            else:
                tls.sendall(
                    b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 5000\r\n\r\n{"apiVersion":'
                )
            held.append(tls)
        yield len(held)
    finally:
        for connection in held:
            connection.close()
