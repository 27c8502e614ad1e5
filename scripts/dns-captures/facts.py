#!/usr/bin/env python3
"""Derive NAME.facts.json of a DNS + SMTP capture from the capture itself, with tshark, and
check it against the signed zone the answers must come from and the scenario it was made for.

    facts.py FILE.pcap --name NAME --description TEXT --zone ZONE.canonical
             [--trust-anchor DSFILE] [--spki-sha256 HEX] [--client-report FILE]
             [--check "udp|tcp smtp dane kdig"] [--out FILE]

What is on the wire comes from tshark 4.0:

- DNS: `tshark -T pdml -Y dns` (TCP reassembled), which keeps every DNS message of a frame,
  every record in wire order and every field's raw bytes. Each record's data is put in
  presentation form from tshark's own fields (dns.mx.*, dns.tlsa.*, dns.rrsig.*, ...; binary
  fields and RRSIG times from the fields' raw bytes). A second pass with `-T fields` (the
  command in README.md) must agree with the first on every message's id, flags, question,
  rcode and DO bit.
- SMTP and TLS: `tshark -T fields -Y "tcp.port == 25"` (commands, reply codes and lines,
  ClientHello SNI, ServerHello version and cipher).

Names (qname, owners, linkage hosts) are lowercase without the trailing dot, as stripwatch
compares them; record data is in zone-file presentation form, as `ldns-read-zone` prints it
(names inside it with the trailing dot).

Checks (exit 1 on any failure): every query has exactly one response; every record in every
answer and authority section is in the signed zone (same owner, type and data; TTL not above
the zone's); plus what --check names:
  udp / tcp  every DNS message went over that transport
  smtp       exactly one SMTP session, STARTTLS offered, sent, answered 220, TLS ServerHello,
             and the linkage MX -> host -> address -> TLSA is complete
  dane       every query has DO, every answer is NOERROR with AD, every non-empty answer
             carries RRSIGs, a TLSA answer for the host was seen, SNI names that host
  kdig       six queries (MX, A, TLSA, TXT, TXT, DNSKEY), all with DO, AD and RRSIGs, no SMTP
  tls12      the ServerHello chose TLS 1.2 and the server's Certificate message is visible
             (leaf and issuing CA)
  tlsa-match / tlsa-mismatch
             a TLSA answer for the host is (is not) `3 1 1 <SHA-256 of the SPKI of the leaf
             the server sent>`; the leaf's SPKI is computed with openssl from the wire bytes
"""

import argparse
import base64
import hashlib
import datetime
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
         33: "SRV", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
         50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 257: "CAA"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS"}
TLS_VERSIONS = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
SECTIONS = {"Answers": "answers", "Authoritative nameservers": "authority", "Additional records": "additional"}

FAILURES = []


def die(msg):
    print("facts.py: %s" % msg, file=sys.stderr)
    sys.exit(1)


def fail(msg):
    FAILURES.append(msg)


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if r.returncode != 0:
        die("%s failed: %s" % (" ".join(cmd[:3]), r.stderr.decode(errors="replace")))
    return r.stdout.decode(errors="replace")


def type_name(n):
    return TYPES.get(n, "TYPE%d" % n)


def type_number(name):
    for k, v in TYPES.items():
        if v == name:
            return k
    return int(name[4:])


def name_of(show):
    """tshark's name -> lowercase, no trailing dot (root is "")."""
    if show in ("<Root>", ""):
        return ""
    return show.rstrip(".").lower()


def fqdn(show):
    """tshark's name -> presentation form with the trailing dot."""
    n = name_of(show)
    return n + "." if n else "."


def txt_string(raw):
    out = []
    for b in raw:
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7f:
            out.append(c)
        else:
            out.append("\\%03d" % b)
    return '"' + "".join(out) + '"'


def sig_time(raw):
    return datetime.datetime.fromtimestamp(int(raw, 16), datetime.timezone.utc).strftime("%Y%m%d%H%M%S")


# ------------------------------------------------------------------ DNS from PDML

class RR:
    def __init__(self, node):
        self.node = node
        self.fields = [f for f in node.iter("field") if f.get("name")]

    def all(self, name):
        return [f for f in self.fields if f.get("name") == name]

    def show(self, name):
        for f in self.fields:
            if f.get("name") == name:
                return f.get("show")
        return None

    def raw(self, name):
        for f in self.fields:
            if f.get("name") == name:
                return f.get("value", "")
        return None


def rdata_text(rr, rtype):
    """Presentation form of one record's data, from tshark's fields."""
    s = rr.show
    if rtype == 1:
        return s("dns.a")
    if rtype == 28:
        return s("dns.aaaa")
    if rtype == 2:
        return fqdn(s("dns.ns"))
    if rtype == 5:
        return fqdn(s("dns.cname"))
    if rtype == 12:
        return fqdn(s("dns.ptr.domain_name"))
    if rtype == 15:
        return "%s %s" % (s("dns.mx.preference"), fqdn(s("dns.mx.mail_exchange")))
    if rtype == 6:
        return "%s %s %s %s %s %s %s" % (fqdn(s("dns.soa.mname")), fqdn(s("dns.soa.rname")),
                                         s("dns.soa.serial_number"), s("dns.soa.refresh_interval"),
                                         s("dns.soa.retry_interval"), s("dns.soa.expire_limit"),
                                         s("dns.soa.minimum_ttl"))
    if rtype == 16:
        return " ".join(txt_string(bytes.fromhex(f.get("value", ""))) for f in rr.all("dns.txt"))
    if rtype == 52:
        return "%s %s %s %s" % (s("dns.tlsa.certificate_usage"), s("dns.tlsa.selector"),
                                s("dns.tlsa.matching_type"),
                                rr.raw("dns.tlsa.certificate_association_data").lower())
    if rtype == 48:
        return "%d %s %s %s" % (int(s("dns.dnskey.flags"), 16), s("dns.dnskey.protocol"),
                                s("dns.dnskey.algorithm"),
                                base64.b64encode(bytes.fromhex(rr.raw("dns.dnskey.public_key"))).decode())
    if rtype == 43:
        return "%s %s %s %s" % (s("dns.ds.key_id"), s("dns.ds.algorithm"), s("dns.ds.digest_type"),
                                rr.raw("dns.ds.digest").lower())
    if rtype == 46:
        return "%s %s %s %s %s %s %s %s %s" % (
            type_name(int(s("dns.rrsig.type_covered"))), s("dns.rrsig.algorithm"), s("dns.rrsig.labels"),
            s("dns.rrsig.original_ttl"), sig_time(rr.raw("dns.rrsig.signature_expiration")),
            sig_time(rr.raw("dns.rrsig.signature_inception")), s("dns.rrsig.key_tag"),
            fqdn(s("dns.rrsig.signers_name")),
            base64.b64encode(bytes.fromhex(rr.raw("dns.rrsig.signature"))).decode())
    if rtype == 47:
        # the bitmap's types are further dns.resp.type fields after the record's own type
        types = [type_name(int(f.get("show"))) for f in rr.all("dns.resp.type")[1:]]
        return " ".join([fqdn(s("dns.nsec.next_domain_name"))] + types)
    # anything else: RFC 3597 generic form from the record's raw bytes
    raw = bytes.fromhex(rr.node.get("value", ""))
    rdlen = int(s("dns.resp.len") or 0)
    data = raw[len(raw) - rdlen:] if rdlen else b""
    return "\\# %d %s" % (rdlen, data.hex())


def parse_dns_proto(p):
    """One <proto name="dns"> -> dict of the message's facts."""
    def find(name):
        for f in p.iter("field"):
            if f.get("name") == name:
                return f
        return None

    def show(name, default=None):
        f = find(name)
        return f.get("show") if f is not None else default

    msg = {"id": int(show("dns.id"), 16), "qr": show("dns.flags.response") == "1",
           "opcode": int(show("dns.flags.opcode", "0")),
           "flags": {"aa": show("dns.flags.authoritative") == "1", "tc": show("dns.flags.truncated") == "1",
                     "rd": show("dns.flags.recdesired") == "1", "ra": show("dns.flags.recavail") == "1",
                     "ad": show("dns.flags.authenticated") == "1", "cd": show("dns.flags.checkdisable") == "1"},
           "rcode_low": int(show("dns.flags.rcode", "0")),
           "questions": [], "answers": [], "authority": [], "additional": [], "edns": None,
           "tcp_length": int(show("dns.length")) if show("dns.length") is not None else None}
    for sec in p.findall("field"):
        title = sec.get("show")
        if sec.get("name") != "" or title not in ("Queries",) + tuple(SECTIONS):
            continue
        for node in sec.findall("field"):
            rr = RR(node)
            if title == "Queries":
                msg["questions"].append((name_of(rr.show("dns.qry.name")), type_name(int(rr.show("dns.qry.type")))))
                continue
            rtype = int(rr.all("dns.resp.type")[0].get("show"))
            if rtype == 41:
                z = int(rr.show("dns.resp.z") or "0", 16)
                msg["edns"] = {"udp_size": int(rr.show("dns.rr.udp_payload_size")),
                               "version": int(rr.show("dns.resp.edns0_version")),
                               "do": bool(z & 0x8000),
                               "ext_rcode": int(rr.show("dns.resp.ext_rcode") or "0", 16)}
                continue
            msg[SECTIONS[title]].append([name_of(rr.show("dns.resp.name")), type_name(rtype),
                                         int(rr.show("dns.resp.ttl")), rdata_text(rr, rtype)])
    ext = msg["edns"]["ext_rcode"] if msg["edns"] else 0
    rc = (ext << 4) | msg["rcode_low"]
    msg["rcode"] = RCODES.get(rc, "RCODE%d" % rc)
    return msg


def dns_messages(pcap):
    xml = run(["tshark", "-r", pcap, "-n", "-o", "tcp.desegment_tcp_streams:TRUE", "-T", "pdml", "-Y", "dns"])
    root = ET.fromstring(xml)
    out = []
    for pkt in root.findall("packet"):
        protos = {p.get("name"): p for p in pkt.findall("proto")}

        def pshow(proto, name):
            pr = protos.get(proto)
            if pr is None:
                return None
            for f in pr.iter("field"):
                if f.get("name") == name:
                    return f.get("show")
            return None
        frame = int(pshow("frame", "frame.number"))
        t = float(pshow("frame", "frame.time_epoch"))
        src, dst = pshow("ip", "ip.src") or pshow("ipv6", "ipv6.src"), pshow("ip", "ip.dst") or pshow("ipv6", "ipv6.dst")
        transport = "tcp" if "tcp" in protos else "udp"
        sport, dport = int(pshow(transport, transport + ".srcport")), int(pshow(transport, transport + ".dstport"))
        stream = int(pshow("tcp", "tcp.stream")) if transport == "tcp" else None
        for p in pkt.findall("proto"):
            if p.get("name") != "dns":
                continue
            m = parse_dns_proto(p)
            m.update({"frame": frame, "time": t, "src": src, "dst": dst, "sport": sport, "dport": dport,
                      "transport": transport, "tcp_stream": stream})
            out.append(m)
    return out


def dns_fields_rows(pcap):
    """The README's -T fields command: one row per frame, messages of a frame joined by ','."""
    fields = ["frame.number", "dns.id", "dns.flags.response", "dns.qry.name", "dns.qry.type", "dns.flags.rcode",
              "dns.flags.authoritative", "dns.flags.truncated", "dns.flags.recdesired", "dns.flags.recavail",
              "dns.flags.authenticated", "dns.flags.checkdisable", "dns.resp.z.do", "dns.count.answers"]
    cmd = ["tshark", "-r", pcap, "-n", "-Y", "dns", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
           "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    rows = {}
    for line in run(cmd).splitlines():
        v = line.split("\t")
        rows[int(v[0])] = dict(zip(fields[1:], v[1:]))
    return rows


def cross_check_fields(msgs, rows):
    by_frame = {}
    for m in msgs:
        by_frame.setdefault(m["frame"], []).append(m)
    if sorted(by_frame) != sorted(rows):
        fail("-T fields and PDML disagree on the frames with DNS: %s vs %s" % (sorted(rows), sorted(by_frame)))
        return
    b = lambda x: "1" if x else "0"
    for frame, ms in by_frame.items():
        r = rows[frame]
        want = {
            "dns.id": ",".join("0x%04x" % m["id"] for m in ms),
            "dns.flags.response": ",".join(b(m["qr"]) for m in ms),
            "dns.qry.name": ",".join(q[0] for m in ms for q in m["questions"]),
            "dns.qry.type": ",".join(str(type_number(q[1])) for m in ms for q in m["questions"]),
            "dns.flags.truncated": ",".join(b(m["flags"]["tc"]) for m in ms),
            "dns.flags.recdesired": ",".join(b(m["flags"]["rd"]) for m in ms),
            "dns.flags.authenticated": ",".join(b(m["flags"]["ad"]) for m in ms),
            "dns.flags.checkdisable": ",".join(b(m["flags"]["cd"]) for m in ms),
            "dns.resp.z.do": ",".join(b(m["edns"]["do"]) for m in ms if m["edns"]),
            "dns.count.answers": ",".join(str(len(m["answers"])) for m in ms),
        }
        # response-only flags
        want["dns.flags.rcode"] = ",".join(str(m["rcode_low"]) for m in ms if m["qr"])
        want["dns.flags.authoritative"] = ",".join(b(m["flags"]["aa"]) for m in ms if m["qr"])
        want["dns.flags.recavail"] = ",".join(b(m["flags"]["ra"]) for m in ms if m["qr"])
        r = dict(r, **{"dns.qry.name": r.get("dns.qry.name", "").lower()})
        for k, v in want.items():
            if r.get(k, "") != v:
                fail("frame %d: -T fields %s = %r, PDML gives %r" % (frame, k, r.get(k, ""), v))


def transactions(msgs):
    """Queries matched with their responses (transport, both ends, id, question)."""
    txs, pending = [], {}
    for m in msgs:
        q = m["questions"][0] if m["questions"] else ("", "")
        if not m["qr"]:
            key = (m["transport"], m["src"], m["sport"], m["dst"], m["dport"], m["id"], q)
            tx = {"query_frame": m["frame"], "response_frame": None,
                  "query_time": m["time"], "response_time": None,
                  "client": {"ip": m["src"], "port": m["sport"]}, "server": {"ip": m["dst"], "port": m["dport"]},
                  "transport": m["transport"], "tcp_stream": m["tcp_stream"], "id": m["id"],
                  "qname": q[0], "qtype": q[1],
                  "query": {"flags": {k: m["flags"][k] for k in ("rd", "ad", "cd")},
                            "edns": m["edns"] and {k: m["edns"][k] for k in ("udp_size", "version", "do")}},
                  "do": bool(m["edns"] and m["edns"]["do"]),
                  "rcode": None, "flags": None, "response_edns": None,
                  "answers": [], "authority": [], "additional": [],
                  "rrsig_present": False, "answer_rrsig_present": False, "extra_responses": []}
            txs.append(tx)
            pending.setdefault(key, []).append(tx)
            continue
        key = (m["transport"], m["dst"], m["dport"], m["src"], m["sport"], m["id"], q)
        cands = pending.get(key, [])
        tx = next((t for t in cands if t["response_frame"] is None), None)
        if tx is None and cands:
            cands[-1]["extra_responses"].append({"frame": m["frame"], "rcode": m["rcode"], "answers": m["answers"]})
            continue
        if tx is None:
            fail("frame %d: response id 0x%04x %s %s without a query" % (m["frame"], m["id"], q[0], q[1]))
            continue
        tx.update({"response_frame": m["frame"], "response_time": m["time"], "rcode": m["rcode"],
                   "flags": m["flags"],
                   "response_edns": m["edns"] and {k: m["edns"][k] for k in ("udp_size", "version", "do")},
                   "answers": m["answers"], "authority": m["authority"], "additional": m["additional"]})
        tx["rrsig_present"] = any(r[1] == "RRSIG" for s in ("answers", "authority", "additional") for r in m[s])
        tx["answer_rrsig_present"] = any(r[1] == "RRSIG" for r in m["answers"])
    return txs


def strip_comment(line):
    """A zone-file line without its comment (a ';' outside quotes)."""
    quoted, esc = False, False
    for i, c in enumerate(line):
        if esc:
            esc = False
        elif c == "\\":
            esc = True
        elif c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            return line[:i]
    return line


def load_zone(path):
    """ldns-read-zone output -> {(owner, type, rdata): ttl}."""
    zone = {}
    for line in open(path):
        line = strip_comment(line).strip()
        if not line:
            continue
        parts = line.split(None, 4)
        if len(parts) == 4:      # the DS line has no TTL
            continue
        owner, ttl, _cls, rtype, rdata = parts
        zone[(name_of(owner), rtype, " ".join(rdata.split()))] = int(ttl)
    return zone


def check_against_zone(txs, zone):
    n = 0
    for tx in txs:
        for sec in ("answers", "authority"):
            for name, rtype, ttl, rdata in tx[sec]:
                key = (name, rtype, " ".join(rdata.split()))
                n += 1
                if key not in zone:
                    fail("frame %s: %s record not in the signed zone: %s %s %s" % (tx["response_frame"], sec, name, rtype, rdata))
                elif ttl > zone[key]:
                    fail("frame %s: TTL %d above the zone's %d for %s %s" % (tx["response_frame"], ttl, zone[key], name, rtype))
    return n


# ------------------------------------------------------------------ SMTP + TLS

SMTP_FIELDS = ["frame.number", "frame.time_epoch", "tcp.stream", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport",
               "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset",
               "smtp.command_line", "smtp.response.code", "smtp.rsp.parameter",
               "tls.handshake.type", "tls.handshake.extensions_server_name",
               "tls.handshake.extensions.supported_version", "tls.handshake.version", "tls.handshake.ciphersuite",
               "tls.alert_message.desc", "tls.handshake.certificate"]


def spki_sha256_of_der(der):
    """SHA-256 of a DER certificate's SubjectPublicKeyInfo (what TLSA selector 1 hashes)."""
    pem = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-pubkey"], input=der,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False).stdout
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False).stdout
    if not spki:
        fail("openssl could not read the public key of a certificate on the wire")
    return hashlib.sha256(spki).hexdigest()


def cipher_table():
    table = {}
    try:
        out = run(["openssl", "ciphers", "-V", "-stdname", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"])
    except SystemExit:
        return table
    for line in out.splitlines():
        m = re.match(r"\s*0x([0-9A-F]{2}),0x([0-9A-F]{2}) - (\S+)", line)
        if m:
            table[int(m.group(1) + m.group(2), 16)] = m.group(3)
    return table


def smtp_sessions(pcap):
    cmd = ["tshark", "-r", pcap, "-n", "-Y", "tcp.port == 25", "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=a", "-E", "aggregator=\x1f"]
    for f in SMTP_FIELDS:
        cmd += ["-e", f]
    ciphers = cipher_table()
    sessions = {}
    for line in run(cmd).splitlines():
        v = dict(zip(SMTP_FIELDS, line.split("\t")))
        L = lambda k: [x for x in v.get(k, "").split("\x1f") if x != ""]
        sid = int(v["tcp.stream"])
        sport, dport = int(v["tcp.srcport"]), int(v["tcp.dstport"])
        to_server = dport == 25
        s = sessions.get(sid)
        if s is None:
            c, sv = ((v["ip.src"], sport), (v["ip.dst"], dport)) if to_server else ((v["ip.dst"], dport), (v["ip.src"], sport))
            s = sessions[sid] = {"tcp_stream": sid, "first_frame": int(v["frame.number"]),
                                 "start_time": float(v["frame.time_epoch"]),
                                 "client": {"ip": c[0], "port": c[1]}, "server": {"ip": sv[0], "port": sv[1]},
                                 "syn_seen": False, "banner": None, "ehlo": None, "ehlo_reply_code": None,
                                 "capabilities": [], "starttls_offered": False, "starttls_sent": False,
                                 "starttls_reply": None, "commands_before_tls": [], "tls": None,
                                 "mail_in_plaintext": False, "end": None}
        if v["tcp.flags.syn"] in ("1", "True") and v["tcp.flags.ack"] in ("0", "False") and to_server:
            s["syn_seen"] = True
        if v["tcp.flags.reset"] in ("1", "True") and not s["end"]:
            s["end"] = "rst by " + ("client" if to_server else "server")
        elif v["tcp.flags.fin"] in ("1", "True") and not s["end"]:
            s["end"] = "fin by " + ("client" if to_server else "server")
        # smtp.req.command is only the first four letters ("STAR" for STARTTLS): read the line
        lines = [x.replace("\\r\\n", "").rstrip("\r\n") for x in L("smtp.command_line")]
        cmds = [x.split(" ", 1)[0] for x in lines]
        params = [x.split(" ", 1)[1] if " " in x else "" for x in lines]
        codes, rparams = L("smtp.response.code"), v.get("smtp.rsp.parameter", "").split("\x1f")
        if to_server and cmds and s["tls"] is None:
            for i, c in enumerate(cmds):
                cu = c.upper()
                s["commands_before_tls"].append(cu)
                if cu in ("EHLO", "HELO") and s["ehlo"] is None:
                    s["ehlo"] = params[i] if i < len(params) else ""
                if cu == "STARTTLS":
                    s["starttls_sent"] = True
                if cu == "MAIL":
                    s["mail_in_plaintext"] = True
        if not to_server and codes and s["tls"] is None:
            if s["banner"] is None:
                s["banner"] = "%s %s" % (codes[0], rparams[0] if rparams else "")
            elif s["ehlo"] is not None and s["ehlo_reply_code"] is None:
                s["ehlo_reply_code"] = int(codes[0])
                s["capabilities"] = [p for p in rparams[1:]]
                s["starttls_offered"] = any(p.strip().upper() == "STARTTLS" for p in s["capabilities"])
            elif s["starttls_sent"] and s["starttls_reply"] is None:
                s["starttls_reply"] = int(codes[0])
        hs = L("tls.handshake.type")
        if hs:
            if s["tls"] is None:
                s["tls"] = {"client_hello": False, "sni": None, "server_hello": False, "version": None,
                            "cipher": None, "alert": None, "certificates_sha256": [],
                            "leaf_spki_sha256": None}
            t = s["tls"]
            if to_server and "1" in hs:
                t["client_hello"] = True
                sni = L("tls.handshake.extensions_server_name")
                t["sni"] = sni[0] if sni else None
            if not to_server and "2" in hs:
                t["server_hello"] = True
                sv = L("tls.handshake.extensions.supported_version")
                ver = int(sv[0], 16) if sv else int(L("tls.handshake.version")[0], 16)
                t["version"] = TLS_VERSIONS.get(ver, "0x%04x" % ver)
                cs = L("tls.handshake.ciphersuite")
                if cs:
                    n = int(cs[0], 16)
                    t["cipher"] = ciphers.get(n, "0x%04x" % n)
        certs = L("tls.handshake.certificate")
        if certs and not to_server and s["tls"] is not None and not s["tls"]["certificates_sha256"]:
            # visible only below TLS 1.3: the server's chain as sent, leaf first
            ders = [bytes.fromhex(c.replace(":", "")) for c in certs]
            s["tls"]["certificates_sha256"] = [hashlib.sha256(d).hexdigest() for d in ders]
            s["tls"]["leaf_spki_sha256"] = spki_sha256_of_der(ders[0])
        alerts = L("tls.alert_message.desc")
        if alerts and s["tls"] is not None and s["tls"]["alert"] is None:
            s["tls"]["alert"] = int(alerts[0])
    return [sessions[k] for k in sorted(sessions)]


# ------------------------------------------------------------------ linkage

def linkage(sessions, txs):
    links = []
    for i, s in enumerate(sessions):
        before = [t for t in txs if t["client"]["ip"] == s["client"]["ip"] and t["response_time"] is not None
                  and t["response_time"] <= s["start_time"] and t["rcode"] == "NOERROR"]
        link = {"session": i, "tcp_stream": s["tcp_stream"], "client": s["client"]["ip"], "server": s["server"]["ip"],
                "mx_qname": None, "mx_query_frame": None, "mx_answer": [], "mx_host": None, "mx_preference": None,
                "address_query_frame": None, "address_ad": None, "mx_ad": None,
                "tlsa_qname": None, "tlsa_query_frame": None, "tlsa_rcode": None, "tlsa_ad": None, "tlsa": []}
        hosts = []
        for t in before:
            if t["qtype"] in ("A", "AAAA"):
                for name, rtype, _ttl, rdata in t["answers"]:
                    if rtype == t["qtype"] and rdata == s["server"]["ip"]:
                        hosts.append((t, name, t["qname"]))
        # the latest MX answer naming one of those hosts
        for t in reversed(before):
            if t["qtype"] != "MX":
                continue
            targets = [(int(r[3].split()[0]), name_of(r[3].split()[1])) for r in t["answers"] if r[1] == "MX"]
            hit = [(pref, h) for pref, h in targets if any(h in (owner, q) for _, owner, q in hosts)]
            if hit:
                pref, host = sorted(hit)[0]
                at = next(a for a, owner, q in reversed(hosts) if host in (owner, q))
                link.update({"mx_qname": t["qname"], "mx_query_frame": t["query_frame"], "mx_ad": t["flags"]["ad"],
                             "mx_answer": sorted(targets), "mx_host": host, "mx_preference": pref,
                             "address_query_frame": at["query_frame"], "address_ad": at["flags"]["ad"]})
                break
        if link["mx_host"] is None and hosts:   # an address lookup without an MX answer before it
            at, owner, q = hosts[-1]
            link.update({"mx_host": q, "address_query_frame": at["query_frame"], "address_ad": at["flags"]["ad"]})
        if link["mx_host"]:
            tq = "_25._tcp." + link["mx_host"]
            link["tlsa_qname"] = tq
            tt = [t for t in before if t["qtype"] == "TLSA" and t["qname"] == tq]
            # TLSA lookups come after the address lookups, but still before the connection
            if tt:
                t = tt[-1]
                link.update({"tlsa_query_frame": t["query_frame"], "tlsa_rcode": t["rcode"], "tlsa_ad": t["flags"]["ad"],
                             "tlsa": [r for r in t["answers"] if r[1] == "TLSA"]})
        links.append(link)
    return links


# ------------------------------------------------------------------ checks

def software():
    def first(cmd, pat):
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=10)
            m = re.search(pat, r.stdout.decode(errors="replace"))
            return m.group(1) if m else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    return {"postfix": first(["postconf", "-d", "-h", "mail_version"], r"(\S+)"),
            "unbound": first(["unbound", "-V"], r"Version (\S+)"),
            "nsd": first(["nsd", "-v"], r"NSD version (\S+)"),
            "ldns": first(["ldns-signzone", "-v"], r"version (\S+)"),
            "kdig": first(["kdig", "-V"], r"version (\S+)"),
            "tshark": first(["tshark", "-v"], r"TShark \(Wireshark\) (\S+)"),
            "tcpdump": first(["tcpdump", "--version"], r"tcpdump version (\S+)")}


def run_checks(checks, txs, sessions, links, spki):
    cs = set(checks.split())
    if not txs:
        fail("no DNS transactions")
    for t in txs:
        if t["response_frame"] is None:
            fail("query frame %d (%s %s) has no response" % (t["query_frame"], t["qname"], t["qtype"]))
        if t["extra_responses"]:
            fail("query frame %d (%s %s) has %d extra responses" % (t["query_frame"], t["qname"], t["qtype"], len(t["extra_responses"])))
        for tr in ("udp", "tcp"):
            if tr in cs and t["transport"] != tr:
                fail("query frame %d went over %s, not %s" % (t["query_frame"], t["transport"], tr))
        if "dane" in cs or "kdig" in cs:
            if not t["do"]:
                fail("query frame %d (%s %s) without DO" % (t["query_frame"], t["qname"], t["qtype"]))
            if t["rcode"] != "NOERROR" or not (t["flags"] or {}).get("ad"):
                fail("response to frame %d (%s %s): rcode %s, AD %s" % (t["query_frame"], t["qname"], t["qtype"], t["rcode"], (t["flags"] or {}).get("ad")))
            if t["answers"] and not t["answer_rrsig_present"]:
                fail("response to frame %d (%s %s) has answers but no RRSIG" % (t["query_frame"], t["qname"], t["qtype"]))
            if t["flags"] and (t["flags"]["aa"] or t["flags"]["tc"] or not t["flags"]["ra"]):
                fail("response to frame %d: unexpected AA/TC or no RA from the recursive resolver" % t["query_frame"])
    if "tcp" in cs:
        for qt in ("MX", "TLSA"):
            if not any(t["qtype"] == qt and t["transport"] == "tcp" and any(r[1] == qt for r in t["answers"]) for t in txs):
                fail("no %s answer over TCP" % qt)
    if "smtp" in cs:
        if len(sessions) != 1:
            fail("%d SMTP sessions, expected 1" % len(sessions))
        for s in sessions:
            if not (s["syn_seen"] and s["starttls_offered"] and s["starttls_sent"] and s["starttls_reply"] == 220):
                fail("session %d: STARTTLS not offered/sent/220" % s["tcp_stream"])
            if not (s["tls"] and s["tls"]["client_hello"] and s["tls"]["server_hello"]):
                fail("session %d: no TLS handshake" % s["tcp_stream"])
            if s["mail_in_plaintext"]:
                fail("session %d: MAIL in plaintext" % s["tcp_stream"])
        for l in links:
            if not (l["mx_qname"] and l["mx_host"] and l["tlsa"]):
                fail("session %d: linkage incomplete: %s" % (l["session"], l))
            if spki and not any(r[3] == "3 1 1 " + spki for r in l["tlsa"]):
                fail("session %d: TLSA answer does not pin the server's key %s" % (l["session"], spki))
    if "dane" in cs:
        for s, l in zip(sessions, links):
            if not (l["mx_ad"] and l["address_ad"] and l["tlsa_ad"]):
                fail("session %d: MX/A/TLSA answers not all AD" % l["session"])
            if not s["tls"] or s["tls"]["sni"] != l["mx_host"]:
                fail("session %d: SNI %s, expected the MX host %s" % (l["session"], s["tls"] and s["tls"]["sni"], l["mx_host"]))
    if "tls12" in cs:
        for s in sessions:
            t = s["tls"] or {}
            if t.get("version") != "TLSv1.2":
                fail("session %d: TLS version %s, expected TLSv1.2" % (s["tcp_stream"], t.get("version")))
            if len(t.get("certificates_sha256") or []) < 2:
                fail("session %d: no server chain (leaf + CA) on the wire" % s["tcp_stream"])
    for want in ("tlsa-match", "tlsa-mismatch"):
        if want not in cs:
            continue
        for s, l in zip(sessions, links):
            leaf = (s["tls"] or {}).get("leaf_spki_sha256")
            hit = leaf is not None and any(r[3] == "3 1 1 " + leaf for r in l["tlsa"])
            if hit != (want == "tlsa-match"):
                fail("session %d: TLSA %s, the leaf's SPKI is %s: expected %s" % (
                    l["session"], [r[3] for r in l["tlsa"]], leaf, want))
    if "kdig" in cs:
        got = [t["qtype"] for t in txs]
        if got != ["MX", "A", "TLSA", "TXT", "TXT", "DNSKEY"]:
            fail("kdig queries %s" % got)
        if sessions:
            fail("SMTP sessions in a DNS-only capture")
        for t in txs:
            if not t["answers"]:
                fail("kdig %s %s: empty answer" % (t["qname"], t["qtype"]))


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--name", required=True)
    ap.add_argument("--description", required=True)
    ap.add_argument("--zone", required=True, help="the signed zone as ldns-read-zone prints it")
    ap.add_argument("--trust-anchor", help="the DS record of the KSK (Unbound's trust anchor)")
    ap.add_argument("--spki-sha256", help="SHA-256 of the receiving server's SubjectPublicKeyInfo")
    ap.add_argument("--client-report", help="the sender's own log lines for this capture")
    ap.add_argument("--check", default="")
    ap.add_argument("--out")
    a = ap.parse_args()

    msgs = dns_messages(a.pcap)
    cross_check_fields(msgs, dns_fields_rows(a.pcap))
    txs = transactions(msgs)
    zone = load_zone(a.zone)
    n_rr = check_against_zone(txs, zone)
    sessions = smtp_sessions(a.pcap)
    links = linkage(sessions, txs)
    run_checks(a.check, txs, sessions, links, a.spki_sha256)

    t0 = min([t["query_time"] for t in txs] + [s["start_time"] for s in sessions] or [0])
    for t in txs:
        t["query_time"] = round(t["query_time"] - t0, 6)
        if t["response_time"] is not None:
            t["response_time"] = round(t["response_time"] - t0, 6)
    for s in sessions:
        s["start_time"] = round(s["start_time"] - t0, 6)
    facts = {
        "name": a.name,
        "pcap": a.name + ".pcap",
        "description": a.description,
        "capture_start": datetime.datetime.fromtimestamp(t0, datetime.timezone.utc).isoformat(timespec="microseconds"),
        "times": "query_time, response_time and start_time are seconds since capture_start",
        "names": "qname, owner names and linkage hosts are lowercase without the trailing dot; record data is in zone-file presentation form",
        "software": software(),
        "zone": {"name": "dns.test",
                 "trust_anchor_ds": " ".join(strip_comment(open(a.trust_anchor).read()).split()) if a.trust_anchor else None,
                 "tlsa_spki_sha256": a.spki_sha256},
        "dns": txs,
        "smtp": sessions,
        "linkage": links,
        "client_report": [l.rstrip("\n") for l in open(a.client_report)] if a.client_report else [],
        "verified": {"records_checked_against_zone": n_rr, "checks": a.check.split(),
                     "tshark_fields_agree": not any("-T fields" in f for f in FAILURES)},
    }
    if FAILURES:
        for f in FAILURES:
            print("facts.py: %s: %s" % (a.name, f), file=sys.stderr)
        sys.exit(1)
    text = json.dumps(facts, indent=1) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    print("facts.py: %s: %d DNS transactions (%d records match the signed zone), %d SMTP sessions, linkage %s" % (
        a.name, len(txs), n_rr, len(sessions),
        "; ".join("%s -> %s -> %s, TLSA %d" % (l["mx_qname"], l["mx_host"], l["server"], len(l["tlsa"])) for l in links) or "-"),
        file=sys.stderr)


if __name__ == "__main__":
    main()
