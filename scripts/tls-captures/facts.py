#!/usr/bin/env python3
"""Derive NAME.facts.json of a STARTTLS capture from the capture itself, with tshark, and
check it against the scenario the capture was made for.

    facts.py FILE.pcap --name NAME --description TEXT --scenario JSON --certs DIR
             [--clients LISTFILE] [--out FILE]

What is on the wire comes from tshark (4.0, TLS records desegmented, --no-duplicate-keys):
per TCP connection to port 25, the SMTP greeting and EHLO reply, the ClientHello (SNI),
the ServerHello (version, cipher), the Certificate message (every certificate's DER),
plaintext alerts, ChangeCipherSpec and the encrypted records after it. The certificates are
decoded with `openssl x509` from the DER bytes taken from the capture, and the chain is
judged at the capture's own time with `openssl verify` against the test root CA in DIR
(security level 2, the SNI or else the banner name as the host).

The scenario (JSON, from make.sh) says per session which certificate the server was given
(a stem of DIR/STEM.pem, or null), the TLS version, an expected alert, whether SNI was sent,
and the findings a careful sender reports. The run fails (exit 1) if the capture and the
scenario disagree: wrong number of sessions, handshake messages missing, a certificate on
the wire that is not the one generated, findings that `openssl verify` does not support,
or a client whose own report (s_client / swaks output) names another version or cipher.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

TLS_VERSIONS = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
ALERT_NAMES = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure",
               42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
               45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter",
               48: "unknown_ca", 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
               71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
               90: "user_canceled", 109: "missing_extension", 110: "unsupported_extension",
               112: "unrecognized_name", 116: "certificate_required", 120: "no_application_protocol"}
# openssl verify error numbers -> the finding kinds they support
VERIFY_FINDINGS = {
    10: ["certificate-expired"],                                  # certificate has expired
    9: ["certificate-expired"],                                   # not yet valid (not used here)
    18: ["certificate-self-signed", "certificate-not-trusted"],   # self-signed leaf
    19: ["certificate-not-trusted"],                             # self-signed in chain
    20: ["certificate-not-trusted"],                             # unable to get local issuer
    21: ["certificate-not-trusted"],
    62: ["certificate-host-mismatch"],                           # hostname mismatch
    # A path validator at a modern security level (webpki, OpenSSL auth_level 2) builds no
    # trusted path through a 1024-bit key or a SHA-1 signature: weak and not trusted.
    66: ["certificate-weak", "certificate-not-trusted"],         # EE key too small
    67: ["certificate-weak"],                                    # CA key too small
    68: ["certificate-weak"],                                    # CA signature digest too weak
}


def die(msg):
    print("facts.py: %s" % msg, file=sys.stderr)
    sys.exit(1)


def run(cmd, data=None):
    return subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)


def as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def walk(obj, key):
    """Every value of KEY anywhere under OBJ (tshark JSON trees)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                for x in as_list(v):
                    yield x
            else:
                yield from walk(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v, key)


def hexbytes(s):
    return bytes.fromhex(s.replace(":", ""))


def cipher_table():
    """IANA name and OpenSSL name of every cipher suite OpenSSL knows, by code point."""
    out = run(["openssl", "ciphers", "-V", "-stdname", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"]).stdout.decode()
    table = {}
    for line in out.splitlines():
        m = re.match(r"\s*0x([0-9A-F]{2}),0x([0-9A-F]{2}) - (\S+)\s+- (\S+)", line)
        if m:
            table[int(m.group(1) + m.group(2), 16)] = (m.group(3), m.group(4))
    return table


# ------------------------------------------------------------------ reading the capture

def tshark_json(pcap):
    r = run(["tshark", "-r", pcap, "-n", "-o", "tls.desegment_ssl_records:TRUE",
             "-o", "tcp.desegment_tcp_streams:TRUE", "-T", "json", "--no-duplicate-keys",
             "-Y", "tcp.port == 25"])
    if r.returncode != 0:
        die("tshark failed: %s" % r.stderr.decode(errors="replace"))
    return json.loads(r.stdout.decode() or "[]")


def tshark_smtp(pcap):
    r = run(["tshark", "-r", pcap, "-n", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
             "-E", "aggregator=\x1f", "-Y", "smtp", "-e", "tcp.stream", "-e", "tcp.srcport",
             "-e", "smtp.req.command", "-e", "smtp.req.parameter", "-e", "smtp.response.code",
             "-e", "smtp.rsp.parameter"])
    if r.returncode != 0:
        die("tshark (smtp) failed: %s" % r.stderr.decode(errors="replace"))
    rows = []
    for line in r.stdout.decode().splitlines():
        f = line.split("\t")
        f += [""] * (6 - len(f))
        rows.append({"stream": int(f[0]), "srcport": int(f[1]), "command": f[2], "req_param": f[3],
                     "codes": [c for c in f[4].split("\x1f") if c],
                     "params": f[5].split("\x1f") if f[5] else []})
    return rows


def sessions_from(packets, smtp_rows):
    streams = {}
    for p in packets:
        L = p["_source"]["layers"]
        tcp = L["tcp"]
        sid = int(tcp["tcp.stream"])
        ip = L.get("ip", {})
        sport, dport = int(tcp["tcp.srcport"]), int(tcp["tcp.dstport"])
        t = float(L["frame"]["frame.time_epoch"])
        s = streams.get(sid)
        if s is None:
            if dport == 25:
                client, server = (ip.get("ip.src"), sport), (ip.get("ip.dst"), dport)
            else:
                client, server = (ip.get("ip.dst"), dport), (ip.get("ip.src"), sport)
            s = streams[sid] = {"stream": sid, "client": client, "server": server, "first_time": t,
                                "records": [], "syn": False}
        if tcp.get("tcp.flags_tree", {}).get("tcp.flags.syn") == "1" and dport == 25:
            s["syn"] = True
        from_server = sport == 25
        for layer in as_list(L.get("tls")):
            if not isinstance(layer, dict):
                continue
            for rec in as_list(layer.get("tls.record")):
                if not isinstance(rec, dict):
                    continue
                s["records"].append(parse_record(rec, from_server, t, int(L["frame"]["frame.number"])))
    for row in smtp_rows:
        s = streams.get(row["stream"])
        if s is None:
            continue
        s.setdefault("smtp", []).append(row)
    return [streams[k] for k in sorted(streams, key=lambda k: streams[k]["first_time"])]


def parse_record(rec, from_server, t, frame):
    # TLS 1.3 protected records carry the outer type as "opaque_type" (always 23)
    ct = int(rec.get("tls.record.content_type", rec.get("tls.record.opaque_type", "0")))
    r = {"side": "server" if from_server else "client", "type": ct, "frame": frame, "time": t,
         "handshakes": [], "alert": None, "encrypted": False}
    if ct == 22:
        hs_list = as_list(rec.get("tls.handshake"))
        for hs in hs_list:
            if not isinstance(hs, dict) or "tls.handshake.type" not in hs:
                r["encrypted"] = True       # "Encrypted Handshake Message" (the Finished)
                continue
            h = {"type": int(hs["tls.handshake.type"])}
            if "tls.handshake.version" in hs:
                h["version"] = int(hs["tls.handshake.version"], 16)
            if h["type"] == 2 and "tls.handshake.ciphersuite" in hs:
                h["cipher"] = int(hs["tls.handshake.ciphersuite"], 16)
            sv = [int(v, 16) for v in walk(hs, "tls.handshake.extensions.supported_version")]
            if sv:
                h["supported_versions"] = sv
            sni = list(walk(hs, "tls.handshake.extensions_server_name"))
            if sni:
                h["sni"] = sni[0]
            if h["type"] == 11:
                h["certs"] = [hexbytes(c) for c in walk(hs, "tls.handshake.certificate")]
                h["tshark_dns_names"] = list(walk(hs, "x509ce.dNSName"))
            r["handshakes"].append(h)
    elif ct == 21:
        am = rec.get("tls.alert_message")
        if isinstance(am, dict) and "tls.alert_message.level" in am:
            r["alert"] = {"level": int(am["tls.alert_message.level"]),
                          "description": int(am["tls.alert_message.desc"])}
        else:
            r["encrypted"] = True
    return r


# ------------------------------------------------------------------ certificates

def rfc3339(openssl_date):
    d = datetime.datetime.strptime(openssl_date.strip(), "%b %d %H:%M:%S %Y GMT")
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_cert(der):
    r = run(["openssl", "x509", "-inform", "DER", "-noout", "-text", "-nameopt", "utf8,sep_comma_plus_space",
             "-subject", "-issuer", "-startdate", "-enddate"], der)
    if r.returncode != 0:
        die("openssl x509 cannot read a certificate from the capture: %s" % r.stderr.decode())
    text = r.stdout.decode()
    subject = re.search(r"^subject=(.*)$", text, re.M).group(1)
    issuer = re.search(r"^issuer=(.*)$", text, re.M).group(1)
    cn = re.search(r"(?:^|, )CN ?= ?([^,]+)", subject)
    icn = re.search(r"(?:^|, )CN ?= ?([^,]+)", issuer)
    san = re.search(r"X509v3 Subject Alternative Name:.*\n\s*(.*)", text)
    san_dns = [x.strip()[4:] for x in san.group(1).split(",") if x.strip().startswith("DNS:")] if san else []
    bits = re.search(r"Public-Key: \((\d+) bit\)", text)
    alg = re.search(r"Public Key Algorithm: (\S+)", text).group(1)
    key = {"rsaEncryption": "RSA", "id-ecPublicKey": "EC", "ED25519": "Ed25519"}.get(alg, alg)
    sig = re.search(r"Signature Algorithm: (\S+)", text).group(1)
    return {
        "sha256": hashlib.sha256(der).hexdigest(),
        "subject": subject,
        "subject_cn": cn.group(1) if cn else None,
        "issuer_cn": icn.group(1) if icn else None,
        "san_dns": san_dns,
        "not_before": rfc3339(re.search(r"^notBefore=(.*)$", text, re.M).group(1)),
        "not_after": rfc3339(re.search(r"^notAfter=(.*)$", text, re.M).group(1)),
        "key": "%s %s" % (key, bits.group(1)) if bits else key,
        "signature": sig,
        "self_issued": subject == issuer,
    }


def pem_of(der):
    return run(["openssl", "x509", "-inform", "DER", "-outform", "PEM"], der).stdout


def judge_chain(certs, root_pem, host, when):
    """openssl verify of the chain from the capture at the capture's time, with the test root
    as the only trust anchor; returns the list of (error number, text) it reports."""
    with tempfile.TemporaryDirectory() as d:
        leaf = os.path.join(d, "leaf.pem")
        chain = os.path.join(d, "chain.pem")
        with open(leaf, "wb") as f:
            f.write(pem_of(certs[0]))
        with open(chain, "wb") as f:
            for c in certs[1:]:
                f.write(pem_of(c))
        # -auth_level 2 (112-bit security: RSA >= 2048, no SHA-1), what a careful sender
        # enforces; the openssl verify command applies no level unless told
        cmd = ["openssl", "verify", "-auth_level", "2", "-attime", str(int(when)), "-CAfile", root_pem,
               "-verify_hostname", host]
        if len(certs) > 1:
            cmd += ["-untrusted", chain]
        r = run(cmd + [leaf])
    errors = []
    for m in re.finditer(r"error (\d+) at (\d+) depth lookup: (.*)", (r.stdout + r.stderr).decode()):
        errors.append((int(m.group(1)), "%s (depth %s)" % (m.group(3).strip(), m.group(2))))
    if r.returncode == 0:
        return []
    if not errors:
        errors.append((-1, (r.stdout + r.stderr).decode().strip()))
    return errors


def tlsa_match(path, certs):
    """{"U S M": bool} for every TLSA record in PATH (zone-file lines), RFC 6698/7671 rules:
    usage 3 (DANE-EE) against the leaf, usage 2 (DANE-TA) against any certificate above it."""
    out = {}
    for line in open(path):
        m = re.match(r"\S+\s+(?:\d+\s+)?(?:IN\s+)?TLSA\s+(\d)\s+(\d)\s+(\d)\s+([0-9a-fA-F]+)", line)
        if not m:
            continue
        usage, selector, mtype, data = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4).lower()
        cands = certs[:1] if usage in (1, 3) else certs[1:]
        hit = False
        for der in cands:
            if selector == 1:
                pub = run(["openssl", "x509", "-inform", "DER", "-pubkey", "-noout"], der).stdout
                blob = run(["openssl", "pkey", "-pubin", "-outform", "DER"], pub).stdout
            else:
                blob = der
            digest = {0: lambda b: b.hex(), 1: lambda b: hashlib.sha256(b).hexdigest(),
                      2: lambda b: hashlib.sha512(b).hexdigest()}[mtype](blob)
            hit = hit or digest == data
        out["%d %d %d" % (usage, selector, mtype)] = hit
    return out


# ------------------------------------------------------------------ clients' own reports

def client_report(path):
    text = open(path, errors="replace").read()
    rep = {"tool": "swaks" if path.endswith(".swaks.out") else "openssl s_client"}
    m = re.search(r"New, (\S+), Cipher is (\S+)", text)
    if m and m.group(1) != "(NONE),":
        rep["version"], rep["cipher"] = m.group(1).rstrip(","), m.group(2)
    m = re.search(r"TLS started with cipher ([^:]+):([^:]+):", text)
    if m:
        rep["version"], rep["cipher"] = m.group(1), m.group(2)
    m = re.search(r"SSL alert number (\d+)", text)
    if m:
        rep["alert_received"] = int(m.group(1))
    m = re.search(r"Verify return code: (\d+) \((.*)\)", text)
    if m:
        rep["verify"] = (int(m.group(1)), m.group(2))
    return rep


# ------------------------------------------------------------------ facts

def session_facts(s, ciphers):
    recs = s["records"]
    hs = [(r, h) for r in recs for h in r["handshakes"]]
    ch = next((h for r, h in hs if r["side"] == "client" and h["type"] == 1), None)
    sh = next((h for r, h in hs if r["side"] == "server" and h["type"] == 2), None)
    cert_msg = next((h for r, h in hs if r["side"] == "server" and h["type"] == 11), None)
    alert_rec = next((r for r in recs if r["alert"] is not None), None)
    version = None
    if sh:
        v = sh.get("supported_versions", [sh.get("version")])[0]
        version = TLS_VERSIONS.get(v, "0x%04x" % v)
    cipher = None
    if sh:
        cipher = ciphers.get(sh["cipher"], ("0x%04X" % sh["cipher"], None))[0]

    def ccs(side):
        return next((i for i, r in enumerate(recs) if r["side"] == side and r["type"] == 20), None)

    def after(i, side, pred):
        return i is not None and any(r["side"] == side and pred(r) for r in recs[i + 1:])

    completed = False
    if sh and alert_rec is None:
        if version == "TLSv1.3":
            # the client's Finished is its first application-data record; the server then
            # sends more application data (tickets, the EHLO reply)
            first_c = next((i for i, r in enumerate(recs) if r["side"] == "client" and r["type"] == 23), None)
            completed = after(first_c, "server", lambda r: r["type"] == 23)
        else:
            completed = (after(ccs("client"), "client", lambda r: r["type"] == 22 and r["encrypted"]) and
                         after(ccs("server"), "server", lambda r: r["type"] == 22 and r["encrypted"]))

    def count(side, ct):
        return sum(1 for r in recs if r["side"] == side and r["type"] == ct)

    smtp = s.get("smtp", [])
    srv = [row for row in smtp if row["srcport"] == 25 and row["codes"]]
    banner = srv[0] if srv and srv[0]["codes"][0] == "220" else None
    ehlo = next((row for row in srv if row["codes"][0] == "250" and len(row["params"]) > 1), None)
    starttls_sent = any(row["command"].upper().startswith("STAR") for row in smtp)

    certs = cert_msg["certs"] if cert_msg else []
    infos = [describe_cert(c) for c in certs]
    leaf = infos[0] if infos else {}
    f = {
        "client_ip": s["client"][0], "client_port": s["client"][1],
        "server_ip": s["server"][0], "server_port": s["server"][1],
        "start_time": datetime.datetime.fromtimestamp(s["first_time"], datetime.timezone.utc)
                      .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "server_banner_name": banner["params"][0].split()[0] if banner and banner["params"] else None,
        "server_ehlo_name": ehlo["params"][0].split()[0] if ehlo else None,
        "starttls": starttls_sent,
        "starttls_offered": bool(ehlo and any(p.upper() == "STARTTLS" for p in ehlo["params"])),
        "tls_client_hello": ch is not None,
        "tls_server_hello": sh is not None,
        "tls_version": version,
        "tls_cipher": cipher,
        "tls_sni": ch.get("sni") if ch else None,
        "alert": alert_rec["alert"] if alert_rec else None,
        "alert_sender": alert_rec["side"] if alert_rec else None,
        "alert_name": ALERT_NAMES.get(alert_rec["alert"]["description"]) if alert_rec else None,
        "handshake_completed": completed,
        "encrypted_alert_records": {"client": sum(1 for r in recs if r["side"] == "client" and r["type"] == 21 and r["encrypted"]),
                                    "server": sum(1 for r in recs if r["side"] == "server" and r["type"] == 21 and r["encrypted"])},
        "application_data_records": {"client": count("client", 23), "server": count("server", 23)},
        "leaf_sha256": leaf.get("sha256"),
        "chain_sha256": [i["sha256"] for i in infos],
        "chain_subject_cn": [i["subject_cn"] for i in infos],
        "leaf_subject_cn": leaf.get("subject_cn"),
        "leaf_issuer_cn": leaf.get("issuer_cn"),
        "leaf_san_dns": leaf.get("san_dns", []) if infos else [],
        "leaf_not_before": leaf.get("not_before"),
        "leaf_not_after": leaf.get("not_after"),
        "leaf_key": leaf.get("key"),
        "leaf_signature": leaf.get("signature"),
        "leaf_self_issued": leaf.get("self_issued"),
    }
    if cert_msg and infos and cert_msg["tshark_dns_names"][:len(leaf["san_dns"])] != leaf["san_dns"]:
        die("stream %d: tshark and openssl disagree on the leaf's SAN (%r vs %r)"
            % (s["stream"], cert_msg["tshark_dns_names"], leaf["san_dns"]))
    return f, certs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--name", required=True)
    ap.add_argument("--description", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--clients")
    ap.add_argument("--tlsa", action="append", default=[], metavar="NAME=PATH",
                    help="a TLSA zone file to match against each session's chain")
    ap.add_argument("--out")
    a = ap.parse_args()
    scenario = json.loads(a.scenario)
    ciphers = cipher_table()
    root_pem = os.path.join(a.certs, "root.pem")

    packets = tshark_json(a.pcap)
    sessions = sessions_from(packets, tshark_smtp(a.pcap))
    client_outs = []
    if a.clients:
        client_outs = [l.strip() for l in open(a.clients) if l.strip()]
    want = scenario["sessions"]
    problems = []
    if len(sessions) != len(want):
        die("%s: %d TCP sessions on port 25 in the capture, the scenario has %d" % (a.name, len(sessions), len(want)))
    if len(client_outs) not in (0, len(want)):
        die("%s: %d client runs for %d sessions" % (a.name, len(client_outs), len(want)))

    out_sessions = []
    for n, (s, w) in enumerate(zip(sessions, want), 1):
        f, certs = session_facts(s, ciphers)
        tag = "%s session %d" % (a.name, n)
        rep = client_report(client_outs[n - 1]) if client_outs else {}
        f["client_software"] = rep.get("tool")

        # -- the handshake the scenario needs is on the wire
        if not s["syn"]:
            problems.append("%s: no SYN from the client" % tag)
        if not f["starttls"] or not f["tls_client_hello"]:
            problems.append("%s: no STARTTLS / ClientHello" % tag)
        if f["server_banner_name"] is None:
            problems.append("%s: no 220 greeting" % tag)
        want_sni = w.get("sni", "mx.tls.test")
        if f["tls_sni"] != want_sni:
            problems.append("%s: SNI %r, want %r" % (tag, f["tls_sni"], want_sni))
        if f["tls_version"] != w.get("version"):
            problems.append("%s: TLS version %r, want %r" % (tag, f["tls_version"], w.get("version")))
        if f["alert"] != w.get("alert"):
            problems.append("%s: plaintext alert %r, want %r" % (tag, f["alert"], w.get("alert")))
        if w.get("alert") and f["alert_sender"] != "server":
            problems.append("%s: the alert came from the %s, not the server" % (tag, f["alert_sender"]))
        if f["handshake_completed"] != (w.get("alert") is None):
            problems.append("%s: handshake_completed is %r" % (tag, f["handshake_completed"]))
        if f["tls_version"] == "TLSv1.3" and certs:
            problems.append("%s: a plaintext certificate in TLS 1.3?" % tag)
        if f["tls_version"] == "TLSv1.2" and f["application_data_records"]["client"] < 1:
            problems.append("%s: no application data from the client" % tag)

        # -- the certificates on the wire are the ones generated for the server
        stem = w.get("cert")
        if stem and f["tls_version"] == "TLSv1.2":
            sent = open(os.path.join(a.certs, stem + ".chain.pem"), "rb").read()
            ders = [run(["openssl", "x509", "-outform", "DER"], b"-----BEGIN" + part).stdout
                    for part in sent.split(b"-----BEGIN")[1:]]
            if [hashlib.sha256(d).hexdigest() for d in ders] != f["chain_sha256"]:
                problems.append("%s: the chain on the wire is not %s.chain.pem" % (tag, stem))
            fp = run(["openssl", "x509", "-in", os.path.join(a.certs, stem + ".pem"), "-noout",
                      "-fingerprint", "-sha256"]).stdout.decode().split("=", 1)[1].strip()
            if fp.replace(":", "").lower() != f["leaf_sha256"]:
                problems.append("%s: leaf fingerprint differs from %s.pem" % (tag, stem))

        # -- the findings: judged independently by openssl verify at capture time
        findings = list(w["findings"])
        f["expected_findings"] = findings
        if f["tls_version"] == "TLSv1.2" and certs:
            host = f["tls_sni"] or f["server_banner_name"]
            errs = judge_chain(certs, root_pem, host, s["first_time"])
            f["openssl_verify"] = {"host": host, "errors": [e[1] for e in errs] or ["ok"]}
            judged = sorted({k for num, _ in errs for k in VERIFY_FINDINGS.get(num, ["unknown-%d" % num])})
            if judged != sorted(findings):
                problems.append("%s: openssl verify supports %r, scenario says %r (%r)"
                                % (tag, judged, findings, errs))
        else:
            f["openssl_verify"] = None
            if f["tls_version"] == "TLSv1.3" and findings != ["certificate-not-observable"]:
                problems.append("%s: TLS 1.3 findings %r" % (tag, findings))
            if f["alert"] and findings != ["tls-handshake-failed"]:
                problems.append("%s: alert findings %r" % (tag, findings))
        if w.get("dane"):
            f["expected_findings_with_tlsa"] = {"tls-dane.tlsa": [], "tls-dane-mismatch.tlsa": ["tlsa-invalid"]}
            f["tlsa_match"] = {}
            for spec in a.tlsa:
                tname, tpath = spec.split("=", 1)
                res = tlsa_match(tpath, certs)
                f["tlsa_match"][tname] = res
                want_match = "mismatch" not in tname
                if not res or any(v != want_match for v in res.values()):
                    problems.append("%s: TLSA records of %s match %r" % (tag, tname, res))

        # -- the client's own report agrees with the wire
        if rep:
            if f["tls_version"] and rep.get("version") != f["tls_version"]:
                problems.append("%s: %s says %r, wire says %r" % (tag, rep["tool"], rep.get("version"), f["tls_version"]))
            if f["tls_cipher"]:
                names = next((v for v in ciphers.values() if v[0] == f["tls_cipher"]), (None, None))
                if rep.get("cipher") not in names:
                    problems.append("%s: %s says cipher %r, wire says %r" % (tag, rep["tool"], rep.get("cipher"), f["tls_cipher"]))
            if f["alert"] and rep.get("alert_received") != f["alert"]["description"]:
                problems.append("%s: client did not report alert %d" % (tag, f["alert"]["description"]))
        out_sessions.append(f)

    if problems:
        for p in problems:
            print("facts.py: " + p, file=sys.stderr)
        sys.exit(1)

    postfix = run(["postconf", "-dh", "mail_version"]).stdout.decode().strip()
    openssl = run(["openssl", "version"]).stdout.decode().split()[1]
    swaks = re.search(r"swaks version (\S+)", run(["swaks", "--version"]).stdout.decode())
    doc = {
        "capture": a.name + ".pcap",
        "description": a.description,
        "made_by": {"server": "Postfix %s smtpd (smtpd_tls_security_level = may)" % postfix,
                    "clients": "openssl s_client (OpenSSL %s), swaks %s" % (openssl, swaks.group(1) if swaks else "?"),
                    "capture": "tcpdump --immediate-mode on the client's veth",
                    "facts": "tshark %s + openssl x509/verify on the certificates in the capture"
                             % run(["tshark", "--version"]).stdout.decode().split()[2]},
        "trust_anchor": "tls-test-root-ca.pem",
        "capture_time": out_sessions[0]["start_time"] if out_sessions else None,
        "sessions": out_sessions,
    }
    text = json.dumps(doc, indent=2) + "\n"
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    for n, f in enumerate(out_sessions, 1):
        print("    session %d: %s:%d -> %s:%d %s %s sni=%s alert=%s done=%s leaf=%s %s findings=%s" % (
            n, f["client_ip"], f["client_port"], f["server_ip"], f["server_port"], f["tls_version"],
            f["tls_cipher"], f["tls_sni"], f["alert"], f["handshake_completed"],
            (f["leaf_sha256"] or "-")[:12], f["leaf_key"], f["expected_findings"]), file=sys.stderr)


if __name__ == "__main__":
    main()
