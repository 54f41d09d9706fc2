#!/usr/bin/env python3
"""Interactive sessions through the firewall pair, like an SSH user typing.

sessions.py HOST PORT N SECONDS [--udp]

Opens N TCP connections (or one UDP flow), sends one numbered line per connection every 100 ms
(every second when N > 50) and checks that every echo comes back once, in order. Runs for SECONDS,
then waits up to 10 s for outstanding echoes. Prints one JSON line with the result; exits 0 only
if no connection saw a reset, a lost, duplicated or reordered line, or an echo still missing.
"""
import json
import select
import socket
import sys
import time

host, port, n, dur = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
udp = "--udp" in sys.argv
interval = 0.1 if n <= 50 else 1.0

if udp:
    conns = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for c in conns:
        c.connect((host, port))
else:
    conns = [socket.create_connection((host, port), timeout=10) for _ in range(n)]
for c in conns:
    c.setblocking(False)
index = {c.fileno(): i for i, c in enumerate(conns)}
sent = [0] * n
expect = [1] * n
buf = [b""] * n
last_echo = [time.time()] * n
maxgap = 0.0
problems = []
start = time.time()
next_round = start


def receive(wait):
    global maxgap
    r, _, _ = select.select(conns, [], [], wait)
    now = time.time()
    for c in r:
        i = index[c.fileno()]
        try:
            d = c.recv(65536)
        except ConnectionResetError:
            problems.append(f"conn {i}: reset")
            conns.remove(c)
            continue
        except (BlockingIOError, ConnectionRefusedError):
            continue
        if not d and not udp:
            problems.append(f"conn {i}: closed by peer")
            conns.remove(c)
            continue
        buf[i] += d
        while b"\n" in buf[i]:
            line, buf[i] = buf[i].split(b"\n", 1)
            try:
                ci, seq = map(int, line.split())
            except ValueError:
                problems.append(f"conn {i}: garbage {line!r}")
                continue
            if udp and seq < expect[i]:
                continue  # a UDP duplicate is not a TCP-style failure
            if ci != i or (seq != expect[i] and not udp):
                problems.append(f"conn {i}: got {seq}, expected {expect[i]}")
            expect[i] = seq + 1
            maxgap = max(maxgap, now - last_echo[i])
            last_echo[i] = now


while time.time() - start < dur and not problems:
    now = time.time()
    if now >= next_round:
        for i, c in enumerate(conns):
            sent[i] += 1
            try:
                c.send(b"%d %d\n" % (i, sent[i]))
            except (BlockingIOError, ConnectionRefusedError):
                pass
            except OSError as e:
                problems.append(f"conn {i}: send: {e}")
        next_round += interval
    receive(max(0.0, min(next_round - time.time(), 0.05)))

deadline = time.time() + 10
while time.time() < deadline and any(expect[i] <= sent[i] for i in range(n)) and not problems:
    receive(0.1)
missing = sum(max(0, sent[i] - expect[i] + 1) for i in range(n))
if missing and not udp:
    problems.append(f"{missing} echoes still missing")
if udp and time.time() - max(last_echo) > 11:
    problems.append("udp flow stalled: no echo in the last second of sending")
print(json.dumps({"connections": n, "lines": sum(sent), "missing": missing,
                  "maxgap_s": round(maxgap, 3), "problems": problems[:10]}))
sys.exit(1 if problems else 0)
