"""Writes a small Ethernet pcap of one SMTP session in which the server answers STARTTLS with
220 and the dialog then goes on in cleartext (MAIL, RCPT, QUIT). With "split", the first byte
of the client's first post-220 command and of the server's first post-220 reply travel in
segments of their own.

    python3 make_split_pcap.py whole.pcap whole
    python3 make_split_pcap.py split.pcap split
    stripwatch analyze -o out-whole whole.pcap; stripwatch analyze -o out-split split.pcap

whole: verdict cleartext-after-starttls, mail_transactions 1.
split: verdict tls-handshake-failed (non-tls-client-bytes), mail_transactions 0.
"""
import struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack(f"!{len(b)//2}H", b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
C = (bytes([192,0,2,10]), 40000); S = (bytes([198,51,100,25]), 25)
def frame(src, dst, seq, ack, flags, payload):
    tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, ack, 0x50, flags, 65535, 0, 0) + payload
    ph = src[0] + dst[0] + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(ph + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src[0], dst[0])
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + b"\x08\x00" + ip + tcp
split_first = sys.argv[2] == "split"
pkts = []; t = [1772445600.0]
seq = {"c": 1000, "s": 5000}
def send(side, data):
    src, dst = (C, S) if side == "c" else (S, C)
    other = "s" if side == "c" else "c"
    t[0] += 0.01
    pkts.append((t[0], frame(src, dst, seq[side], seq[other], 0x18, data)))
    seq[side] += len(data)
t[0] += 0.01; pkts.append((t[0], frame(C, S, 999, 0, 0x02, b"")))
t[0] += 0.01; pkts.append((t[0], frame(S, C, 4999, 1000, 0x12, b"")))
t[0] += 0.01; pkts.append((t[0], frame(C, S, 1000, 5000, 0x10, b"")))
send("s", b"220 mx.example.net ESMTP Postfix\r\n")
send("c", b"EHLO client.example.org\r\n")
send("s", b"250-mx.example.net\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
send("c", b"STARTTLS\r\n")
send("s", b"220 2.0.0 Ready to start TLS\r\n")
if split_first:
    send("c", b"M"); send("c", b"AIL FROM:<a@example.org>\r\n")
else:
    send("c", b"MAIL FROM:<a@example.org>\r\n")
if split_first:
    send("s", b"2"); send("s", b"50 2.1.0 Ok\r\n")
else:
    send("s", b"250 2.1.0 Ok\r\n")
send("c", b"RCPT TO:<b@example.net>\r\n"); send("s", b"250 2.1.5 Ok\r\n")
send("c", b"QUIT\r\n"); send("s", b"221 2.0.0 Bye\r\n")
t[0] += 0.01; pkts.append((t[0], frame(C, S, seq["c"], seq["s"], 0x11, b""))); seq["c"] += 1
t[0] += 0.01; pkts.append((t[0], frame(S, C, seq["s"], seq["c"], 0x11, b""))); seq["s"] += 1
t[0] += 0.01; pkts.append((t[0], frame(C, S, seq["c"], seq["s"], 0x10, b"")))
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for ts, fr in pkts:
        f.write(struct.pack("<IIII", int(ts), int((ts % 1) * 1e6), len(fr), len(fr)) + fr)
