"""Captures of TCP inside every tunnel flagprobe opens, and inside the ones it leaves closed.

The home host is 10.77.0.2 (fd77::2 for IPv6); its peer 10.77.0.1 (fd77::1). Inside each tunnel
kind: a short connection (SYN, SYN/ACK, ACK, data, FIN/ACK both ways, ACK). Inside PPPoE, the
founding story too: SYN/ACKs from 198.51.100.7:443 that the home host never asked for, each
answered with a RST (backscatter of a flood that forged our address).

usage: tunnels.py OPENED.pcap CLOSED.pcap [VXLAN_PORT]
"""
import sys

from scapy.all import GRE, IP, UDP, VXLAN, Ether, IPv6, PPPoE, TCP, Raw, wrpcap
from scapy.layers.ppp import PPP
from scapy.contrib.geneve import GENEVE

OUT, CLOSED = sys.argv[1], sys.argv[2]
VXLAN_PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 4789
HOME, PEER, HOME6, PEER6 = "10.77.0.2", "10.77.0.1", "fd77::2", "fd77::1"
MACS = dict(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
OUTER = dict(src="192.0.2.1", dst="192.0.2.2")


def connection(ip, home, peer, sport):
    """IP/TCP packets of one short connection from home:sport to peer:80."""
    s, p = 1000, 5000
    return [
        ip(src=home, dst=peer) / TCP(sport=sport, dport=80, flags="S", seq=s),
        ip(src=peer, dst=home) / TCP(sport=80, dport=sport, flags="SA", seq=p, ack=s + 1),
        ip(src=home, dst=peer) / TCP(sport=sport, dport=80, flags="A", seq=s + 1, ack=p + 1),
        ip(src=home, dst=peer) / TCP(sport=sport, dport=80, flags="PA", seq=s + 1, ack=p + 1) / Raw(b"GET / HTTP/1.0\r\n\r\n"),
        ip(src=peer, dst=home) / TCP(sport=80, dport=sport, flags="FA", seq=p + 1, ack=s + 19),
        ip(src=home, dst=peer) / TCP(sport=sport, dport=80, flags="FA", seq=s + 19, ack=p + 2),
        ip(src=peer, dst=home) / TCP(sport=80, dport=sport, flags="A", seq=p + 2, ack=s + 20),
    ]


def v4(sport):
    return connection(IP, HOME, PEER, sport)


def v6(sport):
    return connection(IPv6, HOME6, PEER6, sport)


def pppoe(inner):
    """A PPPoE session frame with the PPP protocol in two bytes, as Linux and most peers send it."""
    proto = b"\x00\x57" if inner.version == 6 else b"\x00\x21"
    return Ether(**MACS) / PPPoE(sessionid=7) / Raw(proto) / inner


def gre(inner, key=None, seq=None):
    g = GRE(proto=0x86DD if inner.version == 6 else 0x0800)
    if key is not None:
        g.key_present, g.key = 1, key
    if seq is not None:
        g.seqnum_present, g.sequence_number = 1, seq
    return Ether(**MACS) / IP(**OUTER) / g / inner


def gretap(inner):
    return Ether(**MACS) / IP(**OUTER) / GRE(proto=0x6558) / Ether(**MACS) / inner


def vxlan(inner):
    return Ether(**MACS) / IP(**OUTER) / UDP(sport=49152, dport=VXLAN_PORT) / VXLAN(vni=42, flags=0x08) / Ether(**MACS) / inner


def ip_in_ip(inner):
    return Ether(**MACS) / IP(**OUTER, proto=41 if inner.version == 6 else 4) / inner


def ip_in_ip6(inner):
    return Ether(**MACS) / IPv6(src="2001:db8::1", dst="2001:db8::2", nh=41 if inner.version == 6 else 4) / inner


opened = []
for p in v4(40001):
    opened.append(pppoe(p))
for p in v6(40002):
    opened.append(pppoe(p))
for p in v4(40003):
    opened.append(gre(p))
for i, p in enumerate(v4(40004)):
    opened.append(gre(p, key=42, seq=i))
for p in v6(40005):
    opened.append(gre(p, key=7))
for p in v4(40006):
    opened.append(gretap(p))
for p in v4(40007):
    opened.append(vxlan(p))
for p in v4(40008):
    opened.append(ip_in_ip(p))
for p in v6(40009):
    opened.append(ip_in_ip(p))
for p in v4(40010):
    opened.append(ip_in_ip6(p))
for p in v6(40011):
    opened.append(ip_in_ip6(p))
# PPPoE carrying GRE: two tunnels, one inside the other (scapy's PPP layer compresses the protocol
# field to one byte, as RFC 1661 allows).
for p in v4(40012):
    opened.append(Ether(**MACS) / PPPoE(sessionid=7) / PPP(proto=0x0021) / IP(**OUTER) / GRE(proto=0x0800) / p)
# The backscatter story inside PPPoE: unsolicited SYN/ACKs, each answered by our RST.
for i in range(10):
    port = 20000 + i
    opened.append(pppoe(IP(src="198.51.100.7", dst=HOME, ttl=52) / TCP(sport=443, dport=port, flags="SA", seq=7000 + i, ack=9000 + i)))
    opened.append(pppoe(IP(src=HOME, dst="198.51.100.7") / TCP(sport=port, dport=443, flags="R", seq=9000 + i)))
t = 1_700_000_000.0
for i, pkt in enumerate(opened):
    pkt.time = t + i * 0.01
wrpcap(OUT, opened)

closed = []
for p in v4(41001)[:2]:
    closed.append(Ether(**MACS) / IP(**OUTER) / UDP(sport=49152, dport=6081) / GENEVE(vni=42, proto=0x6558) / Ether(**MACS) / p)
for p in v6(41002)[:2]:
    closed.append(Ether(**MACS) / IP(**OUTER) / UDP(sport=3544, dport=50000) / p)
# PPTP's enhanced GRE (version 1) carrying PPP.
for p in v4(41003)[:2]:
    closed.append(Ether(**MACS) / IP(**OUTER) / Raw(b"\x30\x01\x88\x0b\x00\x00\x00\x01\x00\x00\x00\x01\xff\x03\x00\x21") / p)
closed[-1][IP].proto = 47
closed[-2][IP].proto = 47
# Three tunnels deep: PPPoE, GRE, then IPIP.
for p in v4(41004)[:2]:
    closed.append(Ether(**MACS) / PPPoE(sessionid=7) / PPP(proto=0x0021) / IP(**OUTER) / GRE(proto=0x0800) / IP(**OUTER, proto=4) / p)
for i, pkt in enumerate(closed):
    pkt.time = t + i * 0.01
wrpcap(CLOSED, closed)
