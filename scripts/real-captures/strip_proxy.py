#!/usr/bin/env python3
"""On-path SMTP proxy that can strip or break STARTTLS (test tool, stdlib only).

Listens on --listen HOST:PORT, forwards every connection to --upstream HOST:PORT and
treats it according to one mode (chosen per connection from --mode-file if given and
readable, else --mode):

  pass             forward bytes unchanged both ways
  overwrite        replace the STARTTLS keyword in the server's EHLO reply with
                   XXXXXXXA (same length, like Cisco ASA ESMTP inspection)
  delete           remove the STARTTLS line from the EHLO reply (the reply stays
                   well formed: the last line keeps "250 ")
  break-tls        pass the dialog; after the server's 220 reply to STARTTLS, answer the
                   client's first TLS bytes (ClientHello) with a TCP reset
  reject-starttls  answer the client's STARTTLS with "454 4.7.0 TLS not available"
                   without forwarding it
  garbage-after-220
                   pass the dialog; append the cleartext line INJECTED ("250 injected by
                   the path\r\n", an SMTP-shaped reply as a response injection would
                   send) to the server's 220 reply to STARTTLS, in the same write, so it
                   reaches the client before its ClientHello. Nothing more of the server's
                   is forwarded (the line stands instead of the server's TLS bytes); the
                   client's bytes still go to the server. When the client has sent its
                   first bytes after the 220, both connections are closed (FIN) after
                   GRACE seconds unless the client closed first.
  answer-clienthello-421
                   pass the dialog and the 220; answer the client's first bytes after the
                   220 (its ClientHello, not forwarded) with a cleartext
                   "421 4.7.0 TLS not available\r\n" and close both connections (FIN).
                   The 421 answers the ClientHello: it is a failed handshake, not
                   cleartext in the upgrade window.

Server replies are line-buffered while the SMTP dialog is in cleartext, so a reply that
arrives in several reads is still rewritten. Client commands are interpreted only until
the first MAIL command (the message body is never looked at).

Events are appended to --log as JSON lines (one object per event). This is a test tool
meant to run inside a private network namespace.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time

MODES = ("pass", "overwrite", "delete", "break-tls", "reject-starttls",
         "garbage-after-220", "answer-clienthello-421")
MASK = b"XXXXXXXA"
INJECTED = b"250 injected by the path\r\n"
ANSWER_421 = b"421 4.7.0 TLS not available\r\n"
GRACE = 1.0
READ_SIZE = 65536
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0


class Logger:
    def __init__(self, path):
        self.path = path

    def __call__(self, **event):
        event["t"] = round(time.time(), 6)
        line = json.dumps(event, sort_keys=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        else:
            print(line, flush=True)


def split_hostport(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def keyword(line):
    """The capability keyword of one reply line (b'250-STARTTLS\\r\\n' -> b'STARTTLS')."""
    text = line[4:].strip()
    return text.split(b" ", 1)[0].upper() if text else b""


def is_final(line):
    return len(line) < 4 or line[3:4] != b"-"


class Conn:
    def __init__(self, cid, mode, log, creader, cwriter):
        self.cid = cid
        self.mode = mode
        self.log = log
        self.creader = creader
        self.cwriter = cwriter
        self.sreader = None
        self.swriter = None
        self.raw = mode == "pass"     # both directions copy bytes unchanged
        self.c_commands = True        # still interpreting client commands
        self.pending_starttls = False  # client sent STARTTLS, reply not yet seen
        self.break_armed = False      # break-tls: reset on the next client bytes
        self.answer_armed = False     # answer-clienthello-421: answer the next client bytes
        self.drop_s2c = False         # garbage-after-220: the server's bytes go nowhere
        self.close_soon = False       # garbage-after-220: close after the client's bytes
        self.done = False
        self.bytes_c2s = 0
        self.bytes_s2c = 0

    # ---------- helpers

    def reset_client(self, why):
        sock = self.cwriter.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.log(ev="reset", conn=self.cid, why=why)
        self.cwriter.transport.abort()
        if self.swriter is not None:
            self.swriter.transport.abort()
        self.done = True

    async def answer_and_close(self, data):
        """answer-clienthello-421: a cleartext 421 for the ClientHello, then FIN both ways."""
        self.log(ev="client-bytes-after-220", conn=self.cid, n=len(data),
                 tls_handshake=data[:1] == b"\x16")
        self.cwriter.write(ANSWER_421)
        await self.cwriter.drain()
        self.log(ev="answered-421", conn=self.cid)
        self.close_both()

    def close_both(self):
        for w in (self.cwriter, self.swriter):
            try:
                if w.can_write_eof():
                    w.write_eof()
                w.close()
            except OSError:
                pass
        self.done = True

    async def close_after_grace(self):
        """garbage-after-220: give the client GRACE seconds to give up by itself."""
        await asyncio.sleep(GRACE)
        if not self.done:
            self.log(ev="closing-after-garbage", conn=self.cid)
            self.close_both()

    # ---------- server -> client

    def rewrite_reply(self, lines):
        """Apply overwrite/delete to one complete reply (list of lines)."""
        if not lines or not lines[0].startswith(b"250"):
            return lines
        hits = [i for i, ln in enumerate(lines) if keyword(ln) == b"STARTTLS"]
        if not hits:
            return lines
        if self.mode == "overwrite":
            out = list(lines)
            for i in hits:
                ln = out[i]
                pos = ln.upper().find(b"STARTTLS", 4)
                out[i] = ln[:pos] + MASK + ln[pos + len(MASK):]
            self.log(ev="overwrite", conn=self.cid, lines=[out[i].decode("latin-1").rstrip() for i in hits])
            return out
        if self.mode == "delete":
            out = [ln for i, ln in enumerate(lines) if i not in hits]
            if not out:
                # STARTTLS was the only line: keep a minimal well-formed reply
                out = [b"250 OK\r\n"]
            fixed = []
            for i, ln in enumerate(out):
                sep = b" " if i == len(out) - 1 else b"-"
                fixed.append(ln[:3] + sep + ln[4:])
            self.log(ev="delete", conn=self.cid, removed=len(hits), last=fixed[-1].decode("latin-1").rstrip())
            return fixed
        return lines

    async def s2c(self):
        buf = b""
        reply = []
        while not self.done:
            data = await asyncio.wait_for(self.sreader.read(READ_SIZE), IDLE_TIMEOUT)
            if not data:
                break
            self.bytes_s2c += len(data)
            if self.drop_s2c:
                self.log(ev="server-bytes-dropped", conn=self.cid, n=len(data))
                continue
            if self.raw:
                self.cwriter.write(buf + data)
                buf = b""
                await self.cwriter.drain()
                continue
            buf += data
            out = b""
            while b"\n" in buf and not self.raw:
                line, buf = buf.split(b"\n", 1)
                line += b"\n"
                reply.append(line)
                if not is_final(line):
                    continue
                lines, reply = reply, []
                if self.mode in ("overwrite", "delete"):
                    lines = self.rewrite_reply(lines)
                out += b"".join(lines)
                if self.pending_starttls:
                    self.pending_starttls = False
                    code = lines[-1][:3].decode("latin-1")
                    self.log(ev="starttls-reply", conn=self.cid, code=code)
                    if code == "220":
                        if self.mode == "break-tls":
                            self.break_armed = True
                        elif self.mode == "answer-clienthello-421":
                            self.answer_armed = True
                        elif self.mode == "garbage-after-220":
                            # in the same write as the 220, so it cannot come after the
                            # client's ClientHello
                            out += INJECTED
                            self.log(ev="injected", conn=self.cid,
                                     line=INJECTED.decode("latin-1").rstrip())
                            self.drop_s2c = True
                            self.close_soon = True
                            self.raw = True
                        else:
                            self.raw = True
            if self.raw and buf:
                if self.drop_s2c:
                    self.log(ev="server-bytes-dropped", conn=self.cid, n=len(buf))
                else:
                    out += buf
                buf = b""
            if out:
                self.cwriter.write(out)
                await self.cwriter.drain()

    # ---------- client -> server

    async def c2s(self):
        buf = b""
        while not self.done:
            data = await asyncio.wait_for(self.creader.read(READ_SIZE), IDLE_TIMEOUT)
            if not data:
                break
            self.bytes_c2s += len(data)
            if self.break_armed:
                self.log(ev="client-bytes-after-220", conn=self.cid, n=len(data),
                         tls_handshake=data[:1] == b"\x16")
                self.reset_client("break-tls")
                return
            if self.answer_armed:
                await self.answer_and_close(data)
                return
            if self.close_soon:
                self.close_soon = False
                self.log(ev="client-bytes-after-220", conn=self.cid, n=len(data),
                         tls_handshake=data[:1] == b"\x16")
                asyncio.ensure_future(self.close_after_grace())
            if self.raw or not self.c_commands:
                self.swriter.write(buf + data)
                buf = b""
                await self.swriter.drain()
                continue
            buf += data
            out = b""
            while b"\n" in buf and self.c_commands:
                line, buf = buf.split(b"\n", 1)
                line += b"\n"
                verb = line.strip().split(b" ", 1)[0].upper() if line.strip() else b""
                if verb == b"STARTTLS":
                    self.log(ev="client-starttls", conn=self.cid)
                    if self.mode == "reject-starttls":
                        if out:
                            self.swriter.write(out)
                            out = b""
                        self.cwriter.write(b"454 4.7.0 TLS not available\r\n")
                        await self.cwriter.drain()
                        self.log(ev="starttls-rejected-by-proxy", conn=self.cid)
                        continue
                    self.pending_starttls = True
                elif verb == b"MAIL":
                    self.c_commands = False
                out += line
            if not self.c_commands and buf:
                out += buf
                buf = b""
            if out:
                self.swriter.write(out)
                await self.swriter.drain()


class Proxy:
    def __init__(self, args):
        self.args = args
        self.log = Logger(args.log)
        self.up_host, self.up_port = split_hostport(args.upstream)
        self.next_id = 0

    def current_mode(self):
        if self.args.mode_file:
            try:
                with open(self.args.mode_file, encoding="utf-8") as f:
                    mode = f.read().strip()
                if mode in MODES:
                    return mode
            except OSError:
                pass
        return self.args.mode

    async def guard(self, cid, coro, direction):
        """Run one direction; a reset or timeout just ends it (and is logged)."""
        try:
            await coro
        except (ConnectionError, asyncio.TimeoutError) as e:
            self.log(ev="ended", conn=cid, direction=direction, reason=type(e).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug: log it, end the connection
            self.log(ev="error", conn=cid, direction=direction, error=repr(e))

    async def handle(self, creader, cwriter):
        self.next_id += 1
        cid = self.next_id
        peer = cwriter.get_extra_info("peername")
        mode = self.current_mode()
        conn = Conn(cid, mode, self.log, creader, cwriter)
        self.log(ev="open", conn=cid, peer="%s:%d" % peer[:2], mode=mode)
        try:
            conn.sreader, conn.swriter = await asyncio.wait_for(
                asyncio.open_connection(self.up_host, self.up_port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            self.log(ev="upstream-failed", conn=cid, error=str(e))
            cwriter.close()
            self.log(ev="close", conn=cid, c2s=0, s2c=0)
            return
        tasks = [asyncio.ensure_future(self.guard(cid, conn.c2s(), "c2s")),
                 asyncio.ensure_future(self.guard(cid, conn.s2c(), "s2c"))]
        try:
            # whichever direction ends first (EOF, reset, timeout) ends the connection,
            # after its half-close has been passed on
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not conn.done:
                # pass the half-close on to the other side
                targets = []
                if tasks[0] in done:
                    targets.append(conn.swriter)   # client finished sending
                if tasks[1] in done:
                    targets.append(cwriter)        # server finished sending
                for w in targets:
                    try:
                        if w.can_write_eof():
                            w.write_eof()
                    except OSError:
                        pass
                if pending:
                    await asyncio.wait(pending, timeout=5.0)
        finally:
            conn.done = True
            for t in tasks:
                if not t.done():
                    t.cancel()
            for w in (cwriter, conn.swriter):
                try:
                    w.close()
                except Exception:
                    pass
            self.log(ev="close", conn=cid, c2s=conn.bytes_c2s, s2c=conn.bytes_s2c)

    async def run(self):
        host, port = split_hostport(self.args.listen)
        server = await asyncio.start_server(self.handle, host, port, reuse_address=True)
        self.log(ev="listening", addr=self.args.listen, upstream=self.args.upstream,
                 mode=self.args.mode, pid=os.getpid())
        if self.args.ready_file:
            with open(self.args.ready_file, "w", encoding="utf-8") as f:
                f.write("%d\n" % os.getpid())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), self.args.max_runtime)
        except asyncio.TimeoutError:
            self.log(ev="max-runtime-reached")
        server.close()
        await server.wait_closed()
        self.log(ev="stopped")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    p.add_argument("--mode", default="pass", choices=MODES)
    p.add_argument("--mode-file", help="file whose content (a mode name) overrides --mode per connection")
    p.add_argument("--log", help="append JSON events to this file (default: stdout)")
    p.add_argument("--ready-file", help="write the pid here once listening")
    p.add_argument("--max-runtime", type=float, default=300.0, help="exit after this many seconds")
    args = p.parse_args()
    asyncio.run(Proxy(args).run())


if __name__ == "__main__":
    sys.exit(main())
