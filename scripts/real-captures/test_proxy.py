#!/usr/bin/env python3
"""Self-test of strip_proxy.py on 127.0.0.1 only (no namespaces, no root needed).

A fake SMTP server sends its EHLO reply one byte per write (so the proxy sees it in many
reads), with STARTTLS either in the middle or as the last line. Each proxy mode is checked
against what the client receives. Exit code 0 when every check passes.
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EHLO_MID = [b"250-mx.example.test", b"250-PIPELINING", b"250-STARTTLS", b"250 8BITMIME"]
EHLO_LAST = [b"250-mx.example.test", b"250-PIPELINING", b"250 STARTTLS"]
FAKE_CLIENT_HELLO = b"\x16\x03\x01\x00\x05hello"
FAKE_SERVER_HELLO = b"\x16\x03\x03\x00\x05shell"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fake_server(lsock, ehlo_lines, seen):
    lsock.settimeout(10)
    conn, _ = lsock.accept()
    conn.settimeout(10)
    f = conn.makefile("rb")

    def send_slowly(data):
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(0.001)

    send_slowly(b"220 mx.example.test ESMTP\r\n")
    try:
        while True:
            line = f.readline()
            if not line:
                break
            seen.append(line)
            verb = line.strip().split(b" ")[0].upper()
            if verb == b"EHLO":
                send_slowly(b"".join(l + b"\r\n" for l in ehlo_lines))
            elif verb == b"STARTTLS":
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                seen.append(f.read(5))  # the fake ClientHello header
                conn.sendall(FAKE_SERVER_HELLO)
                time.sleep(0.2)
                break
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                break
            else:
                conn.sendall(b"250 2.0.0 Ok\r\n")
    except OSError:
        pass
    conn.close()


def read_reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            return lines
        lines.append(line.rstrip(b"\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def run(mode, ehlo_lines, use_starttls):
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(1)
    seen = []
    t = threading.Thread(target=fake_server, args=(up, ehlo_lines, seen), daemon=True)
    t.start()
    port = free_port()
    tmp = tempfile.mkdtemp()
    ready = os.path.join(tmp, "ready")
    proxy = subprocess.Popen([sys.executable, os.path.join(HERE, "strip_proxy.py"),
                              "--listen", "127.0.0.1:%d" % port,
                              "--upstream", "127.0.0.1:%d" % up.getsockname()[1],
                              "--mode", mode, "--log", os.path.join(tmp, "log"),
                              "--ready-file", ready, "--max-runtime", "20"])
    result = {}
    try:
        for _ in range(100):
            if os.path.exists(ready) and os.path.getsize(ready):
                break
            time.sleep(0.05)
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        f = c.makefile("rb")
        result["banner"] = read_reply(f)
        c.sendall(b"EHLO client.example.test\r\n")
        result["ehlo"] = read_reply(f)
        if use_starttls:
            c.sendall(b"STARTTLS\r\n")
            # the raw socket, so that what came with the 220 is seen as it came: everything
            # that arrives before the client sends anything more
            time.sleep(0.3)
            first = c.recv(4096)
            result["starttls"] = [first.split(b"\r\n", 1)[0]]
            result["with_220"] = first.split(b"\r\n", 1)[1] if b"\r\n" in first else b""
            if first.startswith(b"220"):
                c.sendall(FAKE_CLIENT_HELLO)
                after = b""
                try:
                    while True:
                        data = c.recv(4096)
                        if not data:
                            break
                        after += data
                except ConnectionResetError:
                    after = "reset"
                result["after"] = after
        else:
            c.sendall(b"QUIT\r\n")
            result["quit"] = read_reply(f)
        c.close()
    finally:
        proxy.terminate()
        proxy.wait(10)
        up.close()
    t.join(5)
    result["seen"] = seen
    return result


def main():
    failures = 0

    def check(name, cond):
        nonlocal failures
        print("%s %s" % ("ok  " if cond else "FAIL", name))
        failures += 0 if cond else 1

    r = run("pass", EHLO_MID, False)
    check("pass keeps the EHLO reply", r["ehlo"] == EHLO_MID)
    r = run("overwrite", EHLO_MID, False)
    check("overwrite masks the middle line (reply read byte by byte)",
          r["ehlo"] == [b"250-mx.example.test", b"250-PIPELINING", b"250-XXXXXXXA", b"250 8BITMIME"])
    r = run("overwrite", EHLO_LAST, False)
    check("overwrite masks the last line",
          r["ehlo"] == [b"250-mx.example.test", b"250-PIPELINING", b"250 XXXXXXXA"])
    r = run("delete", EHLO_MID, False)
    check("delete removes the middle line",
          r["ehlo"] == [b"250-mx.example.test", b"250-PIPELINING", b"250 8BITMIME"])
    r = run("delete", EHLO_LAST, False)
    check("delete removes the last line and fixes the separator",
          r["ehlo"] == [b"250-mx.example.test", b"250 PIPELINING"])
    check("delete: QUIT still answered", r.get("quit") == [b"221 2.0.0 Bye"])
    r = run("reject-starttls", EHLO_MID, True)
    check("reject-starttls answers 454", r["starttls"] == [b"454 4.7.0 TLS not available"])
    check("reject-starttls does not forward STARTTLS",
          not any(l.strip().upper() == b"STARTTLS" for l in r["seen"]))
    r = run("break-tls", EHLO_MID, True)
    check("break-tls passes the 220", r["starttls"] == [b"220 2.0.0 Ready to start TLS"])
    check("break-tls resets on the ClientHello", r.get("after") in ("reset", b""))
    r = run("pass", EHLO_MID, True)
    check("pass forwards the ClientHello and the server's answer",
          r["seen"][-1] == FAKE_CLIENT_HELLO[:5] and r.get("after") == FAKE_SERVER_HELLO)
    r = run("garbage-after-220", EHLO_MID, True)
    check("garbage-after-220 passes the 220", r["starttls"] == [b"220 2.0.0 Ready to start TLS"])
    check("garbage-after-220 sends the injected line before any client byte",
          r["with_220"] == b"250 injected by the path\r\n")
    check("garbage-after-220 forwards the ClientHello", r["seen"][-1] == FAKE_CLIENT_HELLO[:5])
    check("garbage-after-220 drops the server's TLS bytes and closes", r.get("after") == b"")
    r = run("answer-clienthello-421", EHLO_MID, True)
    check("answer-clienthello-421 passes the 220 alone",
          r["starttls"] == [b"220 2.0.0 Ready to start TLS"] and r["with_220"] == b"")
    check("answer-clienthello-421 answers the ClientHello with 421 and closes",
          r.get("after") == b"421 4.7.0 TLS not available\r\n")
    check("answer-clienthello-421 does not forward the ClientHello",
          FAKE_CLIENT_HELLO[:5] not in r["seen"])
    total = 18
    print("%d passed, %d failed" % (total - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
