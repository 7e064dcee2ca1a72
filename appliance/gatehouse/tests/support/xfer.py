"""TCP helper for the end-to-end tests (runs inside the test's network namespaces).

serve HOST PORT            accept connections forever; for each, read to EOF, then answer
                           "<bytes> <sha256>" and close.
send HOST PORT BYTES [BPS] send BYTES random bytes (paced to BPS bytes/s if given), half-close,
                           print "<bytes> <sha256>" of what was sent, then the server's answer.
probe HOST PORT            print "connected" or the error; always exits 0.
garbage HOST PORT COUNT    send COUNT random UDP datagrams (0 to 1500 bytes, plus WireGuard-like
                           type bytes and one of 65000 bytes); print "sent".
"""
import hashlib
import os
import socket
import sys
import time


def serve(host, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(16)
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        digest, total = hashlib.sha256(), 0
        try:
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                digest.update(chunk)
                total += len(chunk)
            conn.sendall(f"{total} {digest.hexdigest()}\n".encode())
        except OSError as e:
            print(f"connection failed: {e}", flush=True)
        finally:
            conn.close()


def send(host, port, size, rate=None):
    conn = socket.create_connection((host, port), timeout=60)
    digest, sent, start = hashlib.sha256(), 0, time.monotonic()
    while sent < size:
        chunk = os.urandom(min(1 << 16, size - sent))
        conn.sendall(chunk)
        digest.update(chunk)
        sent += len(chunk)
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    conn.shutdown(socket.SHUT_WR)
    answer = conn.makefile().readline().strip()
    print(f"{sent} {digest.hexdigest()}")
    print(answer, flush=True)


def probe(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        print("connected")
    except OSError as e:
        print(f"failed: {e}")


def garbage(host, port, count):
    import random
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(count):
        body = os.urandom(random.randint(0, 1500))
        if body and i % 2:
            # Looks like a WireGuard message type with reserved zeros.
            body = bytes([random.randint(1, 4), 0, 0, 0]) + body[4:]
        s.sendto(body, (host, port))
    s.sendto(os.urandom(65000), (host, port))
    print("sent")


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "serve":
        serve(host, port)
    elif mode == "send":
        send(host, port, int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else None)
    elif mode == "garbage":
        garbage(host, port, int(sys.argv[4]))
    elif mode == "probe":
        probe(host, port)
    else:
        sys.exit(f"unknown mode {mode}")


main()
