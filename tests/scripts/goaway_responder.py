"""Answers SYNs to one address with a RST/ACK carrying "Go away, we're not home" (TTL 128), like the
responder behind Snort rule 1:27962. usage: goaway_responder.py IFACE ADDRESS COUNT"""
import sys

from scapy.all import IP, TCP, send, sniff

iface, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])


def answer(p):
    reply = IP(src=p[IP].dst, dst=p[IP].src, ttl=128) / TCP(
        sport=p[TCP].dport, dport=p[TCP].sport, flags="RA", seq=0, ack=p[TCP].seq + 1
    ) / b"Go away, we're not home"
    send(reply, verbose=False)


sniff(iface=iface, filter=f"tcp[13] == 2 and dst host {address}", prn=answer, count=count, timeout=30,
      started_callback=lambda: print("ready", flush=True))
