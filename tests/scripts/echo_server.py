#!/usr/bin/env python3
"""TCP and UDP echo server for the lab tests: echo_server.py PORT (TCP and UDP on the same port;
TCP over IPv6 too where the namespace has it)."""
import socket
import sys
import threading

port = int(sys.argv[1])


def tcp(family=socket.AF_INET):
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::", port))
    else:
        s.bind(("0.0.0.0", port))
    s.listen(4096)

    def serve(c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", port))
    while True:
        d, a = u.recvfrom(65536)
        u.sendto(d, a)


def tcp6():
    try:
        tcp(socket.AF_INET6)
    except OSError:
        pass  # no IPv6 in this namespace: IPv4 only


threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tcp6, daemon=True).start()
tcp()
