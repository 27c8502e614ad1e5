#!/usr/bin/env python3
"""The facts of one MTA-STS capture, from the wire (tshark) and from the software's own logs,
independently of stripwatch: the _mta-sts TXT answers the sender got, its connections to TCP/443
(ClientHello SNI and how each ended), its SMTP sessions (was STARTTLS offered on the wire, did
the sender upgrade, did it send MAIL in clear), what Postfix and the resolver logged, and what
the on-path box did. tests/mta_sts.rs compares stripwatch's records with these facts.

    facts.py CAPTURE --name N --description D --domain DOMAIN --proxy-mode MODE
             --fetch-attack on|off|drop|mitm --dns-attack on|off --maillog F --resolver-log F
             --source S --out FILE
"""
import argparse
import json
import re
import subprocess
import sys

FIELDS = [
    "frame.time_epoch", "ip.src", "ip.dst", "tcp.stream", "tcp.srcport", "tcp.dstport",
    "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset", "tcp.len",
    "tls.handshake.type", "tls.handshake.extensions_server_name", "tls.record.content_type",
    "dns.flags.response", "dns.qry.name", "dns.qry.type", "dns.flags.rcode", "dns.txt",
    "smtp.req.command", "smtp.rsp.parameter",
]


def tshark(pcap):
    cmd = ["tshark", "-r", pcap, "-o", "tcp.desegment_tcp_streams:TRUE", "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        row = dict(zip(FIELDS, line.split("\t")))
        yield {k: v for k, v in row.items() if v != ""}


def flag(row, name):
    return row.get(name, "0") in ("1", "True")


def sts_id(txt):
    """The id of a v=STSv1 record, or None."""
    if not txt.startswith("v=STSv1"):
        return None
    m = re.search(r"(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(?:;|$)", txt)
    return m.group(1) if m else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pcap")
    for a in ("name", "description", "domain", "proxy-mode", "fetch-attack", "dns-attack",
              "maillog", "resolver-log", "source", "out"):
        p.add_argument("--" + a, required=True)
    a = p.parse_args()
    rows = list(tshark(a.pcap))

    txt = []
    streams = {}
    for r in rows:
        if r.get("dns.qry.type") == "16" and flag(r, "dns.flags.response"):
            name = r.get("dns.qry.name", "")
            if name.startswith("_mta-sts."):
                records = [t for t in r.get("dns.txt", "").split("|") if t]
                ids = [sts_id(t) for t in records if sts_id(t)]
                txt.append({"qname": name, "rcode": int(r.get("dns.flags.rcode", "0")),
                            "id": ids[0] if len(ids) == 1 else None, "time": float(r["frame.time_epoch"])})
        if "tcp.stream" in r:
            s = streams.setdefault(r["tcp.stream"], {"rows": []})
            s["rows"].append(r)

    fetches, smtp = [], []
    for s in streams.values():
        first = s["rows"][0]
        ports = {first.get("tcp.srcport"), first.get("tcp.dstport")}
        if "443" in ports:
            fetches.append(fetch_facts(s["rows"]))
        elif "25" in ports:
            smtp.append(smtp_facts(s["rows"]))
    maillog = open(a.maillog, encoding="utf-8", errors="replace").read()
    resolver = open(a.resolver_log, encoding="utf-8", errors="replace").read()
    facts = {
        "name": a.name,
        "description": a.description,
        "source": a.source,
        "domain": a.domain,
        "on_path": {
            "starttls": a.proxy_mode,
            "policy_fetch_reset": a.fetch_attack == "on",
            **({"policy_fetch_dropped": True} if a.fetch_attack == "drop" else {}),
            **({"policy_fetch_intercepted": True} if a.fetch_attack == "mitm" else {}),
            "sts_txt_removed": a.dns_attack == "on",
        },
        "txt_answers": txt,
        "fetches": fetches,
        "smtp_sessions": smtp,
        "postfix": {
            "sent": len(re.findall(r" status=sent", maillog)),
            "tls_established": re.findall(r"(\w+) TLS connection established to ([^\s:\[]+)", maillog),
            "policy_secure": "secure" in resolver and "enforce" in resolver,
        },
        "resolver": {
            "fetch_failed": "policy fetch for domain" in resolver and "failed" in resolver,
        },
    }
    check(facts)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(facts, f, indent=2, sort_keys=True)
        f.write("\n")


def fetch_facts(rows):
    """One TCP/443 connection: the SNI of its ClientHello and how it ended, from the wire."""
    client = rows[0]["ip.src"]
    sni = None
    hello = {"client": False, "server": False}
    appdata = {"client": False, "server": False}
    fin = {"client": False, "server": False}
    rst = {"client": False, "server": False}
    alert = False
    for r in rows:
        side = "client" if r["ip.src"] == client else "server"
        types = r.get("tls.handshake.type", "").split("|")
        if "1" in types:
            sni = r.get("tls.handshake.extensions_server_name", sni)
            hello["client"] = True
        if "2" in types:
            hello["server"] = True
        content = r.get("tls.record.content_type", "").split("|")
        if "23" in content:
            appdata[side] = True
        if "21" in content and not appdata[side]:
            alert = True
        fin[side] |= flag(r, "tcp.flags.fin")
        rst[side] |= flag(r, "tcp.flags.reset")
    if appdata["client"] and appdata["server"] and fin["client"] and fin["server"]:
        outcome = "ok"
    elif rst["server"] or rst["client"]:
        outcome = "reset"
    elif alert or (hello["client"] and not appdata["server"]):
        outcome = "handshake-failed"
    else:
        outcome = "timeout"
    return {"client": client, "server": rows[0]["ip.dst"], "time": float(rows[0]["frame.time_epoch"]),
            "sni": sni, "outcome": outcome, "handshake": hello, "application_data": appdata,
            "fin": fin, "reset": rst}


def smtp_facts(rows):
    client = rows[0]["ip.src"]
    params = []
    commands = []
    for r in rows:
        params += r.get("smtp.rsp.parameter", "").split("|")
        # tshark 4.0 shows the first four letters of a command ("STAR")
        commands += [c.upper()[:4] for c in r.get("smtp.req.command", "").split("|") if c]
    return {"client": client, "server": rows[0]["ip.dst"], "time": float(rows[0]["frame.time_epoch"]),
            "starttls_offered": any(p.upper() == "STARTTLS" for p in params),
            "starttls_overwritten": any(p.upper() == "XXXXXXXA" for p in params),
            "starttls_sent": "STAR" in commands,
            "mail_in_clear": "MAIL" in commands}


def check(f):
    """What the scenario means to show must be on the wire, else the capture is wrong."""
    need = []
    if len(f["smtp_sessions"]) != 1:
        need.append("exactly one SMTP session")
    if f["postfix"]["sent"] != 1:
        need.append("one message sent")
    if len(f["txt_answers"]) < 1:
        need.append("the _mta-sts TXT answer")
    removed = f["on_path"]["sts_txt_removed"]
    if any((t["id"] is None) != removed for t in f["txt_answers"]):
        need.append("TXT answers with an id exactly when not removed")
    if removed and f["fetches"]:
        need.append("no policy fetch without a TXT record")
    if not removed:
        on_path = f["on_path"]
        want = ("reset" if on_path["policy_fetch_reset"] else
                "timeout" if on_path.get("policy_fetch_dropped") else
                "handshake-failed" if on_path.get("policy_fetch_intercepted") else "ok")
        if not f["fetches"] or any(x["outcome"] != want for x in f["fetches"]):
            need.append("policy fetches that ended " + want)
    stripped = f["on_path"]["starttls"] == "overwrite"
    for s in f["smtp_sessions"]:
        if stripped != (s["starttls_overwritten"] and s["mail_in_clear"] and not s["starttls_sent"]):
            need.append("a plaintext delivery exactly when STARTTLS was overwritten")
    if need:
        print(f"{f['name']}: the capture lacks: " + "; ".join(need), file=sys.stderr)
        print(json.dumps(f, indent=1), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
