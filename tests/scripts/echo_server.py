#!/usr/bin/env python3
"""TCP and UDP echo server for the lab tests: echo_server.py PORT (TCP and UDP on the same port)."""
import socket
import sys
import threading

port = int(sys.argv[1])


def tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


threading.Thread(target=udp, daemon=True).start()
tcp()
