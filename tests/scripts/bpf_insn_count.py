"""How many BPF instructions one packet executes in a loaded XDP program: an exact figure beside
the bench's nanoseconds, which drift on this VM by more than the differences we look for.

It interprets the program the verifier accepted (`bpftool prog dump xlated`, with the map lookups
and clock reads the verifier inlined), over a copy of the program's read-only data and empty maps
of the loaded sizes, for a sequence of frames. Each frame's count is printed; a frame's state
carries over to the next, so a SYN then two ACKs counts an ACK of a flow the SYN started. The loaded
program itself is never run and its maps are never touched.

Inlined kernel reads: jiffies reads as 5000, the CPU number as 0. Helpers: ktime_get_ns, the ring
buffer and xdp_load_bytes are stubbed (an event costs its instructions, not the helper's).

usage: bpf_insn_count.py PROG_ID FRAME_HEX...   (root; whole Ethernet frames, in hex)
prints: the instructions of each frame, one line each
"""
import json
import re
import subprocess
import sys

M64 = (1 << 64) - 1
ARRAY_VALUE_OFFSET = 312  # where the kernel's inlined array lookups find the values (the same in every map)


class Ptr:
    """A pointer: a region and an offset in it."""
    __slots__ = ("region", "off")

    def __init__(self, region, off):
        self.region, self.off = region, off

    def __add__(self, n):
        return Ptr(self.region, self.off + n)


class Region:
    def __init__(self, size):
        self.bytes = bytearray(size)
        self.ptrs = {}  # 8-byte slots holding a pointer


class Memory:
    def __init__(self):
        self.regions = {}

    def new(self, name, size):
        self.regions[name] = Region(size)
        return self.regions[name]

    def load(self, addr, size):
        if isinstance(addr, int):
            # An address the verifier inlined: jiffies (8 bytes) or this CPU's number (4).
            return 5000 if size == 8 else 0
        r = self.regions[addr.region]
        if size == 8 and addr.off in r.ptrs:
            return r.ptrs[addr.off]
        if addr.off < 0 or addr.off + size > len(r.bytes):
            raise RuntimeError(f"load outside {addr.region} at {addr.off}")
        return int.from_bytes(r.bytes[addr.off:addr.off + size], "little")

    def store(self, addr, size, value):
        r = self.regions[addr.region]
        if addr.off < 0 or addr.off + size > len(r.bytes):
            raise RuntimeError(f"store outside {addr.region} at {addr.off}")
        for k in [k for k in r.ptrs if k < addr.off + size and k + 8 > addr.off]:
            del r.ptrs[k]
        if isinstance(value, Ptr):
            r.ptrs[addr.off] = value
        else:
            r.bytes[addr.off:addr.off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def bpftool(*args):
    return json.loads(subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout)


def program(prog_id):
    """{index: (opcode, text)} from bpftool's plain listing (its JSON form lacks the operands)."""
    out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id)], check=True, capture_output=True, text=True).stdout
    prog = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+): \((\w\w)\) (.*)", line)
        if m:
            prog[int(m.group(1))] = (m.group(2), m.group(3).strip())
    return prog


def memory_for(prog_id):
    mem = Memory()
    for map_id in bpftool("prog", "show", "id", str(prog_id)).get("map_ids", []):
        m = bpftool("map", "show", "id", str(map_id))
        name, kind, size, n = m["name"], m["type"], m["bytes_value"], m["max_entries"]
        region = f"map{map_id}"
        if name.endswith(".rodata") or name.endswith(".bss") or name.endswith(".data"):
            r = mem.new(region, size)
            dump = bpftool("map", "dump", "id", str(map_id))
            r.bytes[:] = bytes(int(x, 16) for x in dump[0]["value"])
        elif kind == "percpu_array":
            r = mem.new(region, ARRAY_VALUE_OFFSET + 8 * n)
            for i in range(n):
                mem.new(f"{region}.cpu0.{i}", size)
                r.ptrs[ARRAY_VALUE_OFFSET + 8 * i] = Ptr(f"{region}.cpu0.{i}", 0)
        elif kind == "array":
            mem.new(region, ARRAY_VALUE_OFFSET + size * n)
        else:
            mem.new(region, 64)
    mem.new("ringbuf", 4096)
    return mem


def run(prog, mem, frame):
    """Instructions executed for one frame."""
    mem.new("pkt", 256 + len(frame)).bytes[256:] = frame
    ctx = mem.new("ctx", 64)
    ctx.ptrs[0], ctx.ptrs[8] = Ptr("pkt", 256), Ptr("pkt", 256 + len(frame))
    frames, depth = [], [0]

    def new_stack():
        depth[0] += 1
        mem.new(f"stack{depth[0]}", 512)
        return Ptr(f"stack{depth[0]}", 512)

    r = [0] * 11
    r[1], r[10] = Ptr("ctx", 0), new_stack()
    pc = count = 0

    def value(src):
        return r[int(src[1:])] if src[0] in "rw" else int(src, 0)

    while True:
        op, text = prog[pc]
        count += 1
        nxt = pc + 1
        cls = int(op, 16) & 7
        if op == "18":  # 64-bit immediate: a map, a map value, or a constant
            nxt = pc + 2
            m = re.match(r"r(\d+) = map\[id:(\d+)\](?:\[0\]\+(\d+))?$", text)
            if m:
                r[int(m.group(1))] = Ptr(f"map{m.group(2)}", int(m.group(3) or 0))
            else:
                m = re.match(r"r(\d+) = (\S+)$", text)
                r[int(m.group(1))] = int(m.group(2), 0) & M64
        elif text == "exit":
            if not frames:
                return count
            nxt, r[6:10], r[10] = frames.pop()
        elif op == "85":  # call
            m = re.match(r"call pc([+-]\d+)", text)
            if m:
                frames.append((nxt, r[6:10], r[10]))
                r[10] = new_stack()
                nxt += int(m.group(1))
            else:
                helper = re.match(r"call (\w+)", text).group(1)
                r[0] = {"bpf_ktime_get_ns": 10**12, "bpf_ringbuf_reserve": Ptr("ringbuf", 0)}.get(helper, 0)
                if helper not in ("bpf_ktime_get_ns", "bpf_ringbuf_reserve", "bpf_ringbuf_submit", "bpf_xdp_load_bytes"):
                    raise RuntimeError(f"helper {helper} at {pc}")
        elif cls in (4, 7):  # ALU
            m = re.match(r"[rw](\d+) (\S+) (.*)$", text)
            d, opr, src = int(m.group(1)), m.group(2), m.group(3)
            bits = 64 if cls == 7 else 32
            mask = (1 << bits) - 1
            if op in ("dc", "d4"):
                e = re.match(r"([bl]e)(\d+)", src)
                n = int(e.group(2))
                v = r[d] & ((1 << n) - 1)
                r[d] = int.from_bytes(v.to_bytes(n // 8, "little"), "big") if e.group(1) == "be" else v
            elif opr == "=" and src[0] == "-" and src[1] in "rw":
                r[d] = -r[int(src[2:])] & mask
            else:
                s, dv = value(src), r[d]
                if isinstance(s, Ptr) or isinstance(dv, Ptr):
                    if opr == "=":
                        r[d] = s
                    elif opr == "+=":
                        r[d] = dv + s if isinstance(dv, Ptr) else s + dv
                    elif opr == "-=" and isinstance(s, Ptr):
                        r[d] = (dv.off - s.off) & M64
                    elif opr == "-=":
                        r[d] = dv + (-(s & M64) if s < 1 << 63 else (1 << 64) - s)
                    else:
                        raise RuntimeError(f"pointer arithmetic {text} at {pc}")
                    if isinstance(r[d], Ptr) and r[d].off >= 1 << 63:
                        r[d] = Ptr(r[d].region, r[d].off - (1 << 64))
                else:
                    s, dv = s & mask, dv & mask
                    signed = dv - (1 << bits) if dv >> (bits - 1) else dv
                    r[d] = {
                        "=": lambda: s, "+=": lambda: dv + s, "-=": lambda: dv - s, "*=": lambda: dv * s,
                        "/=": lambda: dv // s if s else 0, "%=": lambda: dv % s if s else dv, "|=": lambda: dv | s,
                        "&=": lambda: dv & s, "^=": lambda: dv ^ s, "<<=": lambda: dv << (s & (bits - 1)),
                        ">>=": lambda: dv >> (s & (bits - 1)), "s>>=": lambda: signed >> (s & (bits - 1)),
                    }[opr]() & mask
        elif cls in (5, 6):  # jumps
            m = re.match(r"goto pc([+-]\d+)$", text)
            if m:
                nxt += int(m.group(1))
            else:
                m = re.match(r"if [rw](\d+) (\S+) (\S+) goto pc([+-]\d+)$", text)
                a, c, b = r[int(m.group(1))], m.group(2), value(m.group(3))
                # A jump's immediate is 32 bits, sign-extended for a 64-bit comparison (bpftool
                # prints `if r2 s> 0xffffffff` for a comparison with -1).
                if cls == 5 and m.group(3)[0] not in "rw" and isinstance(b, int) and (1 << 31) <= b < (1 << 32):
                    b -= 1 << 32
                if isinstance(a, Ptr) and isinstance(b, Ptr):
                    a, b = a.off, b.off
                elif isinstance(a, Ptr) or isinstance(b, Ptr):  # a pointer against 0: not null
                    a, b = (1 if isinstance(a, Ptr) else a), (1 if isinstance(b, Ptr) else b)
                bits = 32 if cls == 6 else 64
                a, b = a & ((1 << bits) - 1), b & ((1 << bits) - 1)
                sa = a - (1 << bits) if a >> (bits - 1) else a
                sb = b - (1 << bits) if b >> (bits - 1) else b
                taken = {
                    "==": a == b, "!=": a != b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b,
                    "s>": sa > sb, "s>=": sa >= sb, "s<": sa < sb, "s<=": sa <= sb, "&": a & b != 0,
                }[c]
                if taken:
                    nxt += int(m.group(4))
        elif cls == 1:  # load
            m = re.match(r"[rw](\d+) = \*\(u(\d+) \*\)\(r(\d+) ([+-]\d+)\)$", text)
            base, off = r[int(m.group(3))], int(m.group(4))
            r[int(m.group(1))] = mem.load(base + off if isinstance(base, Ptr) else (base + off) & M64, int(m.group(2)) // 8)
        elif cls in (2, 3):  # store
            m = re.match(r"\*\(u(\d+) \*\)\(r(\d+) ([+-]\d+)\) = (\S+)$", text)
            mem.store(r[int(m.group(2))] + int(m.group(3)), int(m.group(1)) // 8, value(m.group(4)))
        else:
            raise RuntimeError(f"unhandled instruction {text} at {pc}")
        pc = nxt


if __name__ == "__main__":
    prog_id = int(sys.argv[1])
    prog, mem = program(prog_id), memory_for(prog_id)
    for frame in sys.argv[2:]:
        print(run(prog, mem, bytes.fromhex(frame)))
