#!/usr/bin/env python3
"""Derive the expected-results JSON of an SMTP capture from the capture itself (stdlib only).

    expect.py FILE.pcap --description TEXT [--source PATH] [--out FILE] [--summary]

Reads a classic pcap (Ethernet, Linux cooked or raw IP; IPv4/IPv6; TCP), reassembles each
TCP connection to port 25/587, parses the cleartext SMTP dialog and the TLS record layer
after a 220 reply to STARTTLS, and applies the stripwatch finding rules:

  tls-ok                     STARTTLS -> 220 -> TLS handshake records from both sides
  starttls-stripped          an EHLO capability line carries a masked token (XXXXXXXA ...)
  starttls-missing           no STARTTLS offer, but an earlier session to the same server
                             (address, port) in this capture offered it
  starttls-not-supported     no STARTTLS offer and nothing in the capture says it was
  starttls-command-rejected  STARTTLS answered with something other than 220
  tls-handshake-failed       220 came, but no TLS handshake completed
  plaintext-by-client        STARTTLS offered, client did not send it, and sent MAIL in clear
  plaintext-fallback         MAIL in clear after an earlier failed upgrade
                             (tls-handshake-failed / starttls-command-rejected) by the
                             same client address to the same server
  cleartext-after-starttls   bytes in the upgrade window, before that side's first TLS
                             byte (see upgrade_window): from the client after STARTTLS
                             (pipelined before the reply, or after the 220 before its
                             ClientHello), or from the server after its 220 before it had
                             the client's ClientHello. Server bytes that answer a
                             ClientHello (the segment acknowledges its first byte) belong
                             to the failed handshake, not to this finding. Only text
                             counts (the first line printable: a command or a reply);
                             binary bytes that are not TLS fail the handshake only.
  auth-in-cleartext          AUTH in clear after a downgrade: in a session that is
                             starttls-stripped or starttls-missing, after the STARTTLS of a
                             session that is starttls-command-rejected or
                             tls-handshake-failed, or without STARTTLS after an earlier
                             failed upgrade of the same pair (see auth_in_cleartext)

The verdict is the most severe finding (order in SEVERITY), else tls-ok or plaintext.
mail_transactions counts the MAIL commands the client sent in cleartext.
"""

import argparse
import ipaddress
import json
import re
import struct
import sys

SMTP_PORTS = (25, 587)
SEVERITY = [
    "auth-in-cleartext",
    "starttls-stripped",
    "cleartext-after-starttls",
    "tcp-overlap-conflict",
    "plaintext-fallback",
    "starttls-missing",
    "tls-handshake-failed",
    "starttls-command-rejected",
    "plaintext-by-client",
    "starttls-not-supported",
    "certificate-not-observable",
]
MASKED = re.compile(rb"^X{4,}A?$|^X+$", re.I)


# ------------------------------------------------------------------ pcap reading

def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise SystemExit("%s: not a classic pcap file" % path)
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        ts, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        yield ts + frac / (1e9 if nano else 1e6), linktype, pkt


def decode(linktype, pkt):
    """-> (src, dst, sport, dport, seq, flags, payload, ack) or None."""
    if linktype == 1:            # Ethernet
        etype = struct.unpack("!H", pkt[12:14])[0]
        off = 14
        while etype in (0x8100, 0x88A8):
            etype = struct.unpack("!H", pkt[off + 2:off + 4])[0]
            off += 4
    elif linktype == 113:        # Linux cooked v1
        etype = struct.unpack("!H", pkt[14:16])[0]
        off = 16
    elif linktype in (101, 12, 14):  # raw IP
        etype = 0x0800 if pkt[0] >> 4 == 4 else 0x86DD
        off = 0
    else:
        raise SystemExit("unsupported link type %d" % linktype)
    if etype == 0x0800:
        ihl = (pkt[off] & 0x0F) * 4
        total = struct.unpack("!H", pkt[off + 2:off + 4])[0]
        if pkt[off + 9] != 6:
            return None
        src = str(ipaddress.IPv4Address(pkt[off + 12:off + 16]))
        dst = str(ipaddress.IPv4Address(pkt[off + 16:off + 20]))
        end = off + total
        off += ihl
    elif etype == 0x86DD:
        plen = struct.unpack("!H", pkt[off + 4:off + 6])[0]
        if pkt[off + 6] != 6:
            return None
        src = str(ipaddress.IPv6Address(pkt[off + 8:off + 24]))
        dst = str(ipaddress.IPv6Address(pkt[off + 24:off + 40]))
        end = off + 40 + plen
        off += 40
    else:
        return None
    sport, dport, seq, ack, doff_flags = struct.unpack("!HHIIH", pkt[off:off + 14])
    doff = (doff_flags >> 12) * 4
    flags = doff_flags & 0x3F
    return src, dst, sport, dport, seq, flags, pkt[off + doff:end], ack


SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10


class Flow:
    def __init__(self, client, server, t):
        self.client, self.server, self.first = client, server, t
        self.isn = {}       # direction -> initial sequence number
        self.segs = {"c": [], "s": []}
        self.acks = {"c": [], "s": []}   # (stream offset of the segment's end, ack) per segment
        self.rst = {"c": False, "s": False}
        self.fin = {"c": False, "s": False}

    def base(self, d):
        if d not in self.isn:
            return min((s for s, _ in self.segs[d]), default=0)
        return (self.isn[d] + 1) & 0xFFFFFFFF

    def sent_before(self, d, other_offset):
        """How far into direction d's stream the bytes go that d sent before it had received
        the other direction's byte at other_offset: the end of the furthest segment whose
        ACK does not cover that byte."""
        base, obase = self.base(d), self.base("s" if d == "c" else "c")
        end = 0
        for seq, payload, ack in self.acks[d]:
            if (ack - obase) & 0xFFFFFFFF <= other_offset:
                end = max(end, ((seq - base) & 0xFFFFFFFF) + len(payload))
        return end

    def stream(self, d):
        base = self.base(d)
        out = bytearray()
        nxt = 0
        for seq, payload in sorted(((s - base) & 0xFFFFFFFF, p) for s, p in self.segs[d]):
            if seq > nxt:
                break           # gap: stop at the first hole
            if seq + len(payload) > nxt:
                out += payload[nxt - seq:]
                nxt = seq + len(payload)
        return bytes(out)


def flows_of(path):
    flows = {}
    order = []
    for t, lt, pkt in read_pcap(path):
        d = decode(lt, pkt)
        if d is None:
            continue
        src, dst, sport, dport, seq, flags, payload, ack = d
        a, b = (src, sport), (dst, dport)
        key = (a, b) if (a, b) in flows else (b, a) if (b, a) in flows else None
        if key is None:
            if flags & SYN and not flags & ACK:
                key = (a, b)
            elif flags & SYN and flags & ACK:
                key = (b, a)
            elif dport in SMTP_PORTS:
                key = (a, b)
            elif sport in SMTP_PORTS:
                key = (b, a)
            else:
                continue
            flows[key] = Flow(key[0], key[1], t)
            order.append(key)
        fl = flows[key]
        direction = "c" if (a, b) == key else "s"
        if flags & SYN:
            fl.isn[direction] = seq
        if flags & RST:
            fl.rst[direction] = True
        if flags & FIN:
            fl.fin[direction] = True
        if payload:
            fl.segs[direction].append((seq, payload))
            if flags & ACK:
                fl.acks[direction].append((seq, payload, ack))
    return [flows[k] for k in order]


# ------------------------------------------------------------------ SMTP

def parse_replies(data):
    """Split a server stream into replies; returns (replies, bytes_used)."""
    replies, cur, pos = [], [], 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        line = data[pos:nl + 1]
        if len(line) < 3 or not line[:3].isdigit():
            break
        pos = nl + 1
        cur.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            replies.append(cur)
            cur = []
    return replies, pos


def tls_records(data):
    """Content types of the TLS records at the start of data (stops at non-TLS bytes)."""
    types, pos = [], 0
    while pos + 5 <= len(data):
        ctype, major = data[pos], data[pos + 1]
        if ctype not in (20, 21, 22, 23) or major != 3:
            break
        length = struct.unpack("!H", data[pos + 3:pos + 5])[0]
        types.append(ctype)
        pos += 5 + length
    return types


def server_sent_certificate(data):
    """True when a cleartext handshake record of the server's holds a Certificate message (11).
    TLS 1.3 encrypts it (records of type 23 after the ServerHello), so it is not observable."""
    pos = 0
    while pos + 5 <= len(data):
        ctype, major = data[pos], data[pos + 1]
        if ctype not in (20, 21, 22, 23) or major != 3:
            return False
        length = struct.unpack("!H", data[pos + 3:pos + 5])[0]
        body = data[pos + 5:pos + 5 + length]
        if ctype == 20:
            return False
        if ctype == 22:
            i = 0
            while i + 4 <= len(body):
                if body[i] == 11:
                    return True
                i += 4 + int.from_bytes(body[i + 1:i + 4], "big")
        pos += 5 + length
    return False


def first_tls_record(data):
    """Offset of the first TLS handshake record header at a line start in data, else None."""
    pos = 0
    while pos + 5 <= len(data):
        if data[pos] == 22 and data[pos + 1] == 3:
            return pos
        nl = data.find(b"\n", pos)
        if nl < 0:
            return None
        pos = nl + 1
    return None


def is_text(data):
    """Window bytes count as cleartext when their first line is printable text (a command or
    a reply); binary bytes that are neither TLS nor text only fail the handshake."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    return bool(first) and all(32 <= b < 127 or b == 9 for b in first)


def upgrade_window(fl, cs, ss, c_tls_at, reply_end, reply_code):
    """The cleartext in the STARTTLS upgrade window, per side.

    c_tls_at: client stream offset just after the STARTTLS line; reply_end: server stream
    offset just after the reply to it. Returns (client_bytes, server_bytes, ch_start,
    s_tls_at): the cleartext each side sent in its window, the client stream offset of its
    first TLS byte (None if it sent none) and the server stream offset where its bytes after
    the window start.

    - Client: with a 220, every byte after STARTTLS before its first TLS record (pipelined
      before the 220 or sent after it); with any other reply, only the bytes it sent before
      it had received the whole reply (its segments' ACKs do not cover the reply's end).
    - Server, after a 220: the bytes after the 220 it sent before it had received the first
      byte of the client's ClientHello (its segments' ACKs do not cover that byte), or all of
      them if the client sent no TLS. Bytes that answer the ClientHello are not in it.
    """
    if reply_code is None:
        return b"", b"", None, reply_end
    rest = cs[c_tls_at:]
    if reply_code != 220:
        sent = fl.sent_before("c", reply_end - 1)
        return rest[:max(0, sent - c_tls_at)], b"", None, reply_end
    p = first_tls_record(rest)
    client = rest if p is None else rest[:p]
    ch_start = None if p is None else c_tls_at + p
    s_end = len(ss) if ch_start is None else fl.sent_before("s", ch_start)
    server = ss[reply_end:max(reply_end, s_end)]
    if server and tls_records(server):
        server = b""        # TLS before the ClientHello: not cleartext
    return client, server, ch_start, reply_end + len(server)


def analyze_flow(fl):
    cs, ss = fl.stream("c"), fl.stream("s")
    replies, _ = parse_replies(ss)
    # client commands, up to STARTTLS or DATA bodies
    cmds = []
    pos = 0
    in_data = False
    c_tls_at = None
    while True:
        nl = cs.find(b"\n", pos)
        if nl < 0:
            break
        line = cs[pos:nl + 1]
        pos = nl + 1
        if in_data:
            if line.rstrip(b"\r\n") == b".":
                in_data = False
                cmds.append("<end-of-data>")
            continue
        verb = line.strip().split(b" ", 1)[0].upper().decode("latin-1") if line.strip() else ""
        cmds.append(verb)
        if verb == "DATA":
            in_data = True
        if verb == "BDAT":
            # BDAT n [LAST]: the next n bytes are the chunk (Exim pipelines it)
            size = line.split()[1] if len(line.split()) > 1 else b""
            pos += int(size) if size.isdigit() else 0
        if verb == "STARTTLS":
            c_tls_at = pos
            break
    # pair: replies[0] is the banner, replies[i+1] answers cmds[i] (no pipelining of
    # EHLO/STARTTLS; pipelined MAIL/RCPT/DATA keep their order)
    ehlo_reply = None
    starttls_reply = None
    for i, verb in enumerate(cmds):
        r = replies[i + 1] if i + 1 < len(replies) else None
        if verb in ("EHLO",) and r is not None:
            ehlo_reply = r
        if verb == "STARTTLS":
            starttls_reply = r
    caps = []
    if ehlo_reply:
        for line in ehlo_reply[1:]:
            caps.append(line[4:].strip().split(b" ", 1)[0].upper())
    offered = b"STARTTLS" in caps
    masked = [c.decode("latin-1") for c in caps if MASKED.match(c)]
    starttls_sent = c_tls_at is not None
    reply_code = int(starttls_reply[-1][:3]) if starttls_reply else None
    tls_started = False
    tls_complete = False
    cert_seen = False
    window = (b"", b"")
    mail_transactions = sum(1 for v in cmds if v == "MAIL")
    if starttls_sent:
        r_end = sum(len(l) for r in replies[:len(cmds) + 1] for l in r)
        c_clear, s_clear, ch_start, s_tls_at = upgrade_window(fl, cs, ss, c_tls_at, r_end,
                                                              reply_code)
        window = (c_clear, s_clear)
    if starttls_sent and reply_code == 220:
        c_types = tls_records(cs[c_tls_at:])
        s_types = tls_records(ss[s_tls_at:])
        # tls_started: the client's first bytes after the 220 are a TLS handshake record;
        # the upgrade completed only if both sides sent handshake records after their
        # cleartext windows (if any).
        tls_started = bool(c_types) and c_types[0] == 22
        c_after = tls_records(cs[ch_start:]) if ch_start is not None else []
        tls_complete = (bool(c_after) and c_after[0] == 22
                        and bool(s_types) and s_types[0] == 22)
        cert_seen = server_sent_certificate(ss[s_tls_at:])
        # client commands after a failed upgrade would be cleartext again
        if not c_types:
            rest = cs[c_tls_at:]
            mail_transactions += sum(1 for ln in rest.split(b"\n")
                                     if ln.strip().upper().startswith(b"MAIL "))
    elif starttls_sent:
        # continue counting cleartext MAIL commands after a rejected STARTTLS
        rest = cs[c_tls_at:]
        in_data = False
        for ln in rest.split(b"\n"):
            s = ln.rstrip(b"\r")
            if in_data:
                in_data = s != b"."
                continue
            v = s.strip().split(b" ", 1)[0].upper() if s.strip() else b""
            if v == b"MAIL":
                mail_transactions += 1
            if v == b"DATA":
                in_data = True
    return {
        "client": fl.client, "server": fl.server, "first": fl.first,
        "offered": offered, "masked": masked, "sent": starttls_sent,
        "reply_code": reply_code, "tls_started": tls_started, "tls_complete": tls_complete,
        "cert_seen": cert_seen, "window": window,
        "auth": cleartext_auth(cs, c_tls_at, tls_started),
        "mail": mail_transactions, "rst": fl.rst, "caps": [c.decode("latin-1") for c in caps],
        "banner": replies[0][0].decode("latin-1").rstrip() if replies else None,
    }


def cleartext_auth(cs, c_tls_at, tls_started):
    """Where the client sent AUTH in clear: (before its STARTTLS, after it). The clear part of
    the client stream is all of it, unless TLS started after STARTTLS; DATA bodies are skipped.
    SASL response lines are base64 or '*' and never read as AUTH."""
    clear = cs[:c_tls_at] if tls_started else cs
    before = after = False
    pos, in_data = 0, False
    for line in clear.split(b"\n"):
        s = line.rstrip(b"\r")
        pos += len(line) + 1
        if in_data:
            in_data = s != b"."
            continue
        verb = s.strip().split(b" ", 1)[0].upper() if s.strip() else b""
        if verb == b"DATA":
            in_data = True
        if verb == b"AUTH":
            if c_tls_at is not None and pos > c_tls_at:
                after = True
            else:
                before = True
    return before, after


def auth_in_cleartext(s, findings, failed_before):
    """AUTH in clear that followed a downgrade: of this session (stripped or missing offer:
    any AUTH; refused or failed upgrade: AUTH after the STARTTLS), or of an earlier session of
    the same pair when this one did not send STARTTLS. A server that never offered STARTTLS,
    or a client that ignored the offer, is no downgrade."""
    before, after = s["auth"]
    if {"starttls-stripped", "starttls-missing"} & findings:
        return before or after
    if {"starttls-command-rejected", "tls-handshake-failed"} & findings:
        return after
    return before and failed_before and not s["sent"]


def judge(infos):
    offered_before = set()      # servers seen offering STARTTLS
    failed_upgrade = set()      # (client addr, server) with a failed upgrade
    sessions = []
    counts = {}
    for s in infos:
        server = s["server"]
        pair = (s["client"][0], server)
        findings = set()
        if s["masked"]:
            findings.add("starttls-stripped")
        elif not s["offered"]:
            findings.add("starttls-missing" if server in offered_before else "starttls-not-supported")
        if s["sent"] and s["reply_code"] is not None and s["reply_code"] != 220:
            findings.add("starttls-command-rejected")
        if s["sent"] and s["reply_code"] == 220 and not s["tls_complete"]:
            findings.add("tls-handshake-failed")
        if s["sent"] and s["reply_code"] not in (None, 220) and s["mail"] > 0:
            # refused upgrade, mail sent anyway in the same connection
            findings.add("plaintext-fallback")
        if any(is_text(w) for w in s["window"]):
            findings.add("cleartext-after-starttls")
        if s["offered"] and not s["sent"] and s["mail"] > 0:
            findings.add("plaintext-by-client")
        if s["mail"] > 0 and not s["tls_started"] and pair in failed_upgrade:
            findings.add("plaintext-fallback")
        if auth_in_cleartext(s, findings, pair in failed_upgrade):
            findings.add("auth-in-cleartext")
        if s["tls_complete"] and not s["cert_seen"]:
            # TLS 1.3 (Postfix to Postfix): the certificate is encrypted; never a pass.
            findings.add("certificate-not-observable")
        tls_ok = s["tls_complete"] and not findings
        if tls_ok:
            verdict = "tls-ok"
        elif findings:
            verdict = min(findings, key=SEVERITY.index)
        else:
            verdict = "plaintext"
        if s["offered"]:
            offered_before.add(server)
        if {"tls-handshake-failed", "starttls-command-rejected"} & findings:
            failed_upgrade.add(pair)
        for f in findings:
            counts[f] = counts.get(f, 0) + 1
        sessions.append({
            "server_port": server[1],
            "verdict": verdict,
            "findings": sorted(findings),
            "starttls_offered": s["offered"],
            "starttls_sent": s["sent"],
            "starttls_reply_code": s["reply_code"],
            "tls_started": s["tls_started"],
            "mail_transactions": s["mail"],
        })
    return sessions, dict(sorted(counts.items()))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pcap")
    p.add_argument("--description", required=True)
    p.add_argument("--source", default="scripts/real-captures/make.sh")
    p.add_argument("--out")
    p.add_argument("--summary", action="store_true", help="print per-session details to stderr")
    args = p.parse_args()
    infos = [analyze_flow(fl) for fl in flows_of(args.pcap)]
    infos = [i for i in infos if i["server"][1] in SMTP_PORTS]
    sessions, counts = judge(infos)
    doc = {"description": args.description, "source": args.source,
           "sessions": sessions, "finding_counts": counts}
    text = json.dumps(doc, indent=2) + "\n"
    if args.summary:
        for i, s in zip(infos, sessions):
            print("  %s:%d -> %s:%d banner=%r caps=%s sent=%s code=%s tls=%s/%s mail=%d rst=%s"
                  " window=%r/%r => %s %s"
                  % (i["client"] + i["server"] + (i["banner"], ",".join(i["caps"]), i["sent"],
                     i["reply_code"], i["tls_started"], i["tls_complete"], i["mail"],
                     i["rst"], i["window"][0][:40], i["window"][1][:40], s["verdict"],
                     s["findings"])), file=sys.stderr)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
