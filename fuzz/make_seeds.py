#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/ (deterministic; re-run after changing an input
layout). Each target's input layout is described at the top of its fuzz_targets/*.rs file.

    python3 fuzz/make_seeds.py

capture_file seeds are copies of the smallest captures in pcaps/ (plain, gzip, zstd, pcapng);
the compressed and pcapng variants need `gzip`, `zstd` and `editcap` (wireshark-common) and are
skipped when a tool is missing.
"""

import gzip
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
PCAPS = os.path.join(HERE, "..", "pcaps")


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- TLS-looking bytes (not real TLS)

def record(ct, body, version=b"\x03\x03"):
    return bytes([ct]) + version + struct.pack(">H", len(body)) + body


def client_hello(sni=b"mx.example.net"):
    sni_ext = struct.pack(">HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    body = (b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\x00\x04\x13\x01\xc0\x2f"
            + b"\x01\x00" + struct.pack(">H", len(sni_ext)) + sni_ext)
    return record(22, b"\x01" + struct.pack(">I", len(body))[1:] + body, b"\x03\x01")


def server_hello():
    body = b"\x03\x03" + bytes(range(100, 132)) + b"\x00" + b"\xc0\x2f" + b"\x00" + b"\x00\x00"
    return record(22, b"\x02" + struct.pack(">I", len(body))[1:] + body)


CCS = record(20, b"\x01")
APPDATA = record(23, bytes(range(7, 7 + 48)))
ALERT_HS_FAILURE = record(21, b"\x02\x28")
SSLV2_HELLO = b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + bytes(21) + bytes(range(16))

# ---------------------------------------------------------------- smtp_session

C, S = 0, 1


def session(flags, events, first_us=None, resegment=None):
    """events: (side, bytes) | ("gap", side, len) | ("conflict", side, n); resegment: replay
    with data cut into pieces of this many bytes and compare (flags bit 7)."""
    out = bytearray([flags])
    if resegment is not None:
        out[0] |= 0x80
        out.append(resegment)
    if first_us is not None:
        out[0] |= 0x40
        out += struct.pack("<q", first_us)
    for ev in events:
        if ev[0] == "gap":
            _, side, n = ev
            out += bytes([side | 2 | 0x10]) + struct.pack("<H", n)
        elif ev[0] == "conflict":
            _, side, n = ev
            out += bytes([side | 8 | 0x10]) + struct.pack("<H", n)
        else:
            side, data = ev
            assert len(data) < 65536
            out += bytes([side | 0x30]) + struct.pack("<H", len(data)) + data
    return bytes(out)


def end(reason):
    return ["fin", "reset", "timeout", "capture-end", "evicted"].index(reason) << 1


BANNER = b"220 mx.example.net ESMTP Postfix (Debian/GNU)\r\n"
EHLO = b"EHLO client.example.org\r\n"


def caps(*lines):
    lines = [b"mx.example.net"] + list(lines)
    out = b""
    for i, l in enumerate(lines):
        out += b"250" + (b" " if i == len(lines) - 1 else b"-") + l + b"\r\n"
    return out


POSTFIX_CAPS = [b"PIPELINING", b"SIZE 10240000", b"VRFY", b"ETRN", b"STARTTLS",
                b"ENHANCEDSTATUSCODES", b"8BITMIME", b"DSN", b"SMTPUTF8", b"CHUNKING"]
BODY = (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hello\r\n\r\n"
        b"Hello.\r\n..a dot-stuffed line\r\nBye.\r\n.\r\n")


def smtp_seeds():
    tls_flight_s = server_hello() + CCS + record(22, bytes(40))
    dialogs = {
        "starttls_ok": session(end("fin"), [
            (S, BANNER), (C, EHLO), (S, caps(*POSTFIX_CAPS)), (C, b"STARTTLS\r\n"),
            (S, b"220 2.0.0 Ready to start TLS\r\n"), (C, client_hello()),
            (S, tls_flight_s), (C, CCS + record(22, bytes(40)) + APPDATA), (S, APPDATA),
        ]),
        "stripped_asa_plaintext_mail": session(end("fin") | 0x10, [
            (S, b"220 ******************************************\r\n"), (C, EHLO),
            (S, caps(b"PIPELINING", b"SIZE 10240000", b"XXXXXXXA", b"8BITMIME")),
            (C, b"MAIL FROM:<a@example.org>\r\n"), (S, b"250 2.1.0 Ok\r\n"),
            (C, b"RCPT TO:<b@example.net>\r\n"), (S, b"250 2.1.5 Ok\r\n"),
            (C, b"DATA\r\n"), (S, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
            (C, BODY[:30]), (C, BODY[30:]), (S, b"250 2.0.0 Ok: queued as 4F2\r\n"),
            (C, b"QUIT\r\n"), (S, b"221 2.0.0 Bye\r\n"),
        ]),
        "deleted_starttls": session(end("fin"), [
            (S, BANNER), (C, EHLO),
            (S, caps(*[c for c in POSTFIX_CAPS if c != b"STARTTLS"])),
            (C, b"MAIL FROM:<a@example.org> SIZE=120\r\n"), (S, b"250 2.1.0 Ok\r\n"),
            (C, b"QUIT\r\n"), (S, b"221 2.0.0 Bye\r\n"),
        ]),
        "pipelined_data_held": session(end("fin") | 0x10, [
            (S, BANNER), (C, EHLO), (S, caps(*POSTFIX_CAPS)),
            (C, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                b"RCPT TO:<c@example.net>\r\nDATA\r\n" + BODY[:20]),
            (S, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"),
            (C, BODY[20:]), (S, b"354 go ahead\r\n"), (S, b"250 2.0.0 Ok\r\n"),
            (C, b"RSET\r\nQUIT\r\n"), (S, b"250 Ok\r\n221 Bye\r\n"),
        ]),
        "bdat_chunks": session(end("fin"), [
            (S, BANNER), (C, EHLO), (S, caps(*POSTFIX_CAPS)),
            (C, b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n"), (S, b"250 Ok\r\n"),
            (C, b"RCPT TO:<b@example.net>\r\n"), (S, b"250 Ok\r\n"),
            (C, b"BDAT 40\r\n" + BODY[:40]), (S, b"250 2.0.0 40 octets received\r\n"),
            (C, b"BDAT 25 LAST\r\n" + BODY[40:65]), (S, b"250 2.0.0 Ok: queued\r\n"),
            (C, b"BDAT 0 LAST\r\n"), (S, b"503 5.5.1 Error\r\n"),
            (C, b"QUIT\r\n"), (S, b"221 Bye\r\n"),
        ]),
        "starttls_injection": session(end("fin"), [
            (S, BANNER), (C, EHLO), (S, caps(*POSTFIX_CAPS)),
            (C, b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.org>\r\n"),
            (S, b"220 2.0.0 Ready to start TLS\r\n"), (S, b"250 2.0.0 Ok\r\n"),
            (C, client_hello()), (S, tls_flight_s),
        ]),
        "starttls_rejected_fallback": session(end("fin"), [
            (S, BANNER), (C, b"ehlo client.example.org\r\n"), (S, caps(*POSTFIX_CAPS)),
            (C, b"STARTTLS\r\n"), (S, b"454 4.7.0 TLS not available due to local problem\r\n"),
            (C, b"MAIL FROM:<a@example.org>\r\n"), (S, b"250 Ok\r\n"),
            (C, b"QUIT\r\n"), (S, b"221 Bye\r\n"),
        ]),
        "handshake_alert": session(end("reset"), [
            (S, BANNER), (C, EHLO), (S, caps(*POSTFIX_CAPS)), (C, b"STARTTLS\r\n"),
            (S, b"220 Ready\r\n"), (C, client_hello()), (S, ALERT_HS_FAILURE),
        ]),
        "after_220_non_tls": session(end("fin"), [
            (S, BANNER), (C, EHLO), (S, caps(*POSTFIX_CAPS)), (C, b"STARTTLS\r\n"),
            (S, b"220 Ready\r\n"), (C, b"EHLO again\r\n"), (S, b"250 mx.example.net\r\n"),
        ]),
        "implicit_tls_465": session(end("timeout") | 1, [
            (C, client_hello()), (S, tls_flight_s), (C, CCS + APPDATA), (S, APPDATA),
        ]),
        "implicit_port_plaintext": session(end("fin") | 1, [
            (S, BANNER), (C, b"HELO client\r\n"), (S, b"250 mx.example.net\r\n"),
        ]),
        "sslv2_client_first": session(end("capture-end"), [(C, SSLV2_HELLO)]),
        "auth_sasl": session(end("fin"), [
            (S, BANNER), (C, EHLO),
            (S, caps(b"AUTH PLAIN LOGIN", b"AUTH=PLAIN LOGIN", b"STARTTLS")),
            (C, b"AUTH LOGIN\r\n"), (S, b"334 VXNlcm5hbWU6\r\n"), (C, b"dXNlcg==\r\n"),
            (S, b"334 UGFzc3dvcmQ6\r\n"), (C, b"cGFzcw==\r\n"), (S, b"235 2.7.0 ok\r\n"),
            (C, b"QUIT\r\n"),
        ]),
        "split_lines_and_gaps": session(end("fin") | 0x20, [
            (S, b"220 mx.exa"), (S, b"mple.net ESMTP\r"), (S, b"\n"), (C, b"EH"), (C, b"LO c\r\n"),
            (S, b"250-mx\r\n250-STAR"), (S, b"TTLS\r\n250-XSTARTTLS\r\n250-STARTTLX\r\n250 QWERTYUI\r\n"),
            ("gap", C, 7), (C, b"\r\nMAIL FROM:<x@y>\r\nDATA\r\n"), (S, b"250 ok\r\n354 go\r\n"),
            (C, b"body\r\n"), ("gap", C, 100), (C, b"more\r\n.\r\n"), (S, b"250 ok\r\n"),
            ("conflict", S, 8), ("gap", S, 3), (S, b"221 bye\r\n"),
        ], first_us=-62135596800000000),
    }
    for name, data in dialogs.items():
        write("smtp_session", name, data)
    # The same dialogs with the segmentation-invariance check on (pieces of 1, 3 and 7 bytes).
    for name, k in (("starttls_ok", 7), ("stripped_asa_plaintext_mail", 3),
                    ("pipelined_data_held", 1), ("bdat_chunks", 3), ("starttls_injection", 7)):
        data = dialogs[name]
        if data[0] & 0x40:
            continue
        write("smtp_session", f"{name}_reseg{k}", bytes([data[0] | 0x80, k]) + data[1:])


# ---------------------------------------------------------------- smtp_lines

def lines_seed(max_line, sizes, text):
    return bytes([max_line, len(sizes)]) + bytes(sizes) + text


def smtp_lines_seeds():
    write("smtp_lines", "ehlo_reply", lines_seed(255, [3, 1, 7], caps(*POSTFIX_CAPS)))
    write("smtp_lines", "masked", lines_seed(
        16, [5, 2], b"220 ****************\r\n250-XXXXXXXA\r\n250-STARTTLX\r\n250 ********\r\n"))
    write("smtp_lines", "commands", lines_seed(
        40, [1], b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 1000 LAST\r\nBDAT 99999999999999999999\r\n"
        b"ehlo x\r\nXCLIENT NAME=x\r\n\x16\x03\x01\x00\r\n"))
    write("smtp_lines", "long_line_cr", lines_seed(4, [2, 1, 1], b"abcd\r\nabc\r\nab\rcd\nabcdefgh\n"))


# ---------------------------------------------------------------- tls_records

def tls_seeds():
    write("tls_records", "handshake_split", bytes([3, 1, 2, 5]) + client_hello() + ALERT_HS_FAILURE)
    write("tls_records", "server_flight", bytes([0]) + server_hello() + CCS + record(22, bytes(40)) + APPDATA)
    write("tls_records", "sslv2", bytes([1, 40]) + SSLV2_HELLO + client_hello())
    write("tls_records", "alert_split", bytes([2, 6, 1]) + record(21, b"\x01\x00") + ALERT_HS_FAILURE)


# ---------------------------------------------------------------- reassembly

def seg(op, rel, payload, wide=False):
    assert op % 8 <= 3
    if len(payload) > 255 or wide:
        op |= 0x20
        return bytes([op]) + struct.pack("<H", rel) + struct.pack("<H", len(payload)) + payload
    return bytes([op]) + struct.pack("<H", rel) + bytes([len(payload)]) + payload


def reassembly_seeds():
    base = struct.pack("<I", 0xFFFFFFF0)  # close to wrap-around
    syn = bytes([0x08]) + struct.pack("<H", 0) + b"\x00"
    script = (syn + seg(0, 7, b"world") + seg(0, 1, b"hello ") + seg(0, 1, b"hello ")
              + seg(0, 1, b"HELLO ") + seg(0, 30, b"later") + bytes([4]) + struct.pack("<H", 40)
              + seg(0, 12, b"250-STARTTLS\r\n") + seg(0, 12, b"250-XXXXXXXA\r\n")
              + bytes([6]) + seg(0, 60, b"after keep off") + bytes([0x16])
              + seg(0x10, 90, b"fin") + bytes([7]))
    write("reassembly", "mixed_default", bytes([0]) + base + script)
    write("reassembly", "consistent", bytes([2]) + base + syn
          + bytes([0]) + struct.pack("<H", 20) + bytes([30])
          + bytes([0]) + struct.pack("<H", 1) + bytes([50])
          + bytes([0x20]) + struct.pack("<H", 100) + struct.pack("<H", 3000)
          + bytes([4]) + struct.pack("<H", 5000) + bytes([7]))
    tight = bytes([1]) + struct.pack("<H", 4) + bytes([2]) + struct.pack("<H", 8)
    write("reassembly", "tight_limits", tight + struct.pack("<I", 1000)
          + seg(0, 0, b"a") + seg(0, 5, b"xyz") + seg(0, 5, b"xqz") + seg(0, 20, b"0123456789")
          + seg(0, 40, b"zz") + seg(0, 50, b"yy") + bytes([7]))


# ---------------------------------------------------------------- decode

def read_pcap_frames(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    frames = []
    off = 24
    while off + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frames.append(data[off + 16:off + 16 + caplen])
        off += 16 + caplen
    return linktype, frames


def frag_op(v6=False, src=0, more=False, off=0, wide_off=False, payload=b"", ident=0, proto=0,
            len8=False):
    op = (1 if v6 else 0) | (src << 1) | (4 if more else 0) | (8 if wide_off else 0) | (0x10 if len8 else 0)
    sel = ident | (proto << 2)
    out = bytes([op, sel])
    out += struct.pack("<H", off) if wide_off else bytes([off])
    n = len(payload) // 8 if len8 else len(payload)
    assert n < 256 and (not len8 or len(payload) % 8 == 0)
    return out + bytes([n]) + payload


def decode_seeds():
    pcap = os.path.join(PCAPS, "real-postfix-delete.pcap")
    if os.path.exists(pcap):
        lt, frames = read_pcap_frames(pcap)
        assert lt == 1
        # mode 0, Ethernet (index 1): a few single frames.
        for i in (0, 3, 5):
            if i < len(frames):
                write("decode", f"eth_frame_{i}", bytes([1]) + frames[i])
        # mode 1: the whole capture as a frame sequence.
        seq = bytearray([1 | (1 << 3)])
        for fr in frames:
            seq += bytes([1]) + struct.pack("<H", len(fr)) + fr
        write("decode", "eth_sequence", bytes(seq))
        # mode 0, raw IP (index 2) and snapped (bit 6).
        if len(frames) > 3:
            write("decode", "raw_ip", bytes([2]) + frames[3][14:])
            write("decode", "raw_ip_snapped", bytes([2 | 0x40]) + frames[3][14:60])
    tcp = struct.pack(">HHIIBBHHH", 40000, 25, 1000, 0, 0x50, 0x18, 65535, 0, 0)
    dgram = tcp + b"EHLO fragmented.example\r\n"  # 20 + 25 bytes
    for lt_index in range(8):
        mode = 2 << 3
        script = (frag_op(more=True, off=0, payload=dgram[:24])
                  + frag_op(more=False, off=3, payload=dgram[24:]))
        write("decode", f"frag_v4_lt{lt_index}", bytes([lt_index | mode]) + script)
    script = (frag_op(v6=True, more=False, off=2, payload=dgram[16:], ident=1)
              + frag_op(v6=True, more=True, off=0, payload=dgram[:16], ident=1)
              + frag_op(more=True, off=0, payload=dgram[:16], ident=2)
              + frag_op(more=True, off=1, payload=dgram[8:24], ident=2)  # overlap
              + bytes([0xff])  # expire
              + frag_op(more=False, off=1, payload=b"x" * 8, ident=3, proto=1))
    write("decode", "frag_mixed_eth", bytes([1 | (3 << 3)]) + script)


# ---------------------------------------------------------------- capture_file

def capture_seeds():
    d = os.path.join(SEEDS, "capture_file")
    os.makedirs(d, exist_ok=True)
    pcaps = sorted((os.path.getsize(os.path.join(PCAPS, f)), f)
                   for f in os.listdir(PCAPS) if f.endswith((".pcap", ".pcapng")))
    small = [f for size, f in pcaps if size < 10 * 1024][:3]
    for f in small:
        shutil.copy(os.path.join(PCAPS, f), os.path.join(d, f))
    if not small:
        return
    src = os.path.join(PCAPS, small[0])
    with open(src, "rb") as f:
        raw = f.read()
    write("capture_file", small[0] + ".gz", gzip.compress(raw, mtime=0))
    # Two gzip members back to back, as `cat a.gz b.gz` makes.
    write("capture_file", "two-members.pcap.gz",
          gzip.compress(raw[:200], mtime=0) + gzip.compress(raw[200:], mtime=0))
    if shutil.which("zstd"):
        out = subprocess.run(["zstd", "-q", "-c", "-19", src], check=True, capture_output=True).stdout
        write("capture_file", small[0] + ".zst", out)
    if shutil.which("editcap"):
        dst = os.path.join(d, small[0] + "ng")
        subprocess.run(["editcap", "-F", "pcapng", src, dst], check=True)
        # Nanosecond pcap, another legacy variant.
        subprocess.run(["editcap", "-F", "nsecpcap", src, os.path.join(d, "nsec-" + small[0])],
                       check=True)


def main():
    smtp_seeds()
    smtp_lines_seeds()
    tls_seeds()
    reassembly_seeds()
    decode_seeds()
    capture_seeds()
    for t in sorted(os.listdir(SEEDS)):
        files = os.listdir(os.path.join(SEEDS, t))
        size = sum(os.path.getsize(os.path.join(SEEDS, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
