#!/usr/bin/env python3
"""gateway-monitor: a tandem plugin that pings the WAN gateway and reports its state through a
health check (tandem demotes the node by 2^20 while a health check fails).

  gateway-monitor.py run      the monitor (started by tandem; events on stdin)
  gateway-monitor.py health   exit 1 while the gateway is down, else 0

Config (TANDEM_PLUGIN_CONFIG, from <config> in config.xml), all optional:
  interface   interface key whose gateway is pinged (default: wan)
  gateway     address to ping instead of the one from config.xml
  down_after  consecutive losses that make the gateway down (default 3)
  up_after    consecutive replies that make it up again (default 3)
  interval    seconds between pings (default 1)
  timeout     seconds to wait for a reply (default 1)
The gateway comes from config.xml read with `config.get` through TANDEM_SOCKET: the interface's
<gateway> names a gateway_item (or is an address itself); reread on every config.applied event.
"""
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

STALE_S = 15


def log(msg):
    print("gateway-monitor: " + msg, file=sys.stderr, flush=True)


def state_path():
    return os.path.join(os.environ.get("TANDEM_PLUGIN_STATE", "."), "state.json")


def config():
    try:
        cfg = json.loads(os.environ.get("TANDEM_PLUGIN_CONFIG") or "{}")
        return cfg if isinstance(cfg, dict) else {}
    except ValueError:
        return {}


def num(cfg, key, default, lo, hi):
    try:
        return max(lo, min(hi, float(cfg.get(key, default))))
    except (TypeError, ValueError):
        return default


def rpc(method, params=None, timeout=5.0):
    path = os.environ.get("TANDEM_SOCKET")
    if not path:
        raise OSError("TANDEM_SOCKET is not set")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    resp = json.loads(buf)
    if "error" in resp:
        raise OSError("%s: %s" % (method, resp["error"].get("message")))
    return resp["result"]


def is_ip(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def gateway_from_xml(xml, iface):
    root = ET.fromstring(xml)
    ifel = root.find("interfaces/" + iface)
    ref = (ifel.findtext("gateway") or "").strip() if ifel is not None else ""
    if is_ip(ref):
        return ref
    items = root.findall("gateways/gateway_item") + root.findall("OPNsense/Gateways/gateway_item")
    items = [g for g in items if (g.findtext("disabled") or "").strip() not in ("1", "yes")]
    named = [g for g in items if ref and (g.findtext("name") or "").strip() == ref]
    on_if = [g for g in items if (g.findtext("interface") or "").strip() == iface]
    default = [g for g in on_if if (g.findtext("defaultgw") or "").strip() == "1"]
    for g in named + default + on_if:
        addr = (g.findtext("gateway") or "").strip()
        if is_ip(addr):
            return addr
    return None


class Monitor:
    def __init__(self):
        self.reload = threading.Event()
        self.reload.set()
        self.gateway = None

    def load(self, cfg):
        if cfg.get("gateway"):
            return str(cfg["gateway"])
        iface = str(cfg.get("interface") or "wan")
        try:
            xml = rpc("config.get")["xml"]
            return gateway_from_xml(xml, iface)
        except (OSError, ValueError, KeyError, ET.ParseError) as e:
            log("cannot read the gateway from config.get: %s" % e)
            return self.gateway

    def write(self, state, losses, oks):
        doc = {"state": state, "gateway": self.gateway, "losses": losses, "successes": oks,
               "ts": time.time()}
        tmp = state_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, state_path())

    def run(self):
        cfg = config()
        down_after = int(num(cfg, "down_after", 3, 1, 1000))
        up_after = int(num(cfg, "up_after", 3, 1, 1000))
        interval = num(cfg, "interval", 1.0, 0.2, 60)
        wait = int(num(cfg, "timeout", 1, 1, 30))
        state, losses, oks = "unknown", 0, 0
        while True:
            if self.reload.is_set():
                self.reload.clear()
                gw = self.load(cfg)
                if gw != self.gateway:
                    log("monitoring gateway %s" % gw)
                    self.gateway = gw
                    state, losses, oks = "unknown", 0, 0
            t = time.monotonic()
            if self.gateway:
                r = subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", str(wait), self.gateway],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if r.returncode == 0:
                    oks, losses = oks + 1, 0
                    if state != "up" and (state == "unknown" or oks >= up_after):
                        log("gateway %s is up" % self.gateway)
                        state = "up"
                else:
                    losses, oks = losses + 1, 0
                    if state != "down" and losses >= down_after:
                        log("gateway %s is down (%d losses in a row)" % (self.gateway, losses))
                        state = "down"
            else:
                state = "unknown"
            self.write(state, losses, oks)
            time.sleep(max(0.0, interval - (time.monotonic() - t)))


def events(mon):
    for raw in sys.stdin:
        try:
            ev = json.loads(raw)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == "config.applied":
            mon.reload.set()
    # stdin closed: tandem is stopping us.
    os._exit(0)


def health():
    try:
        with open(state_path()) as f:
            st = json.load(f)
    except (OSError, ValueError):
        print("no state yet")
        return 0
    age = time.time() - float(st.get("ts", 0))
    if age > STALE_S:
        print("state is %ds old (monitor not running?)" % age)
        return 0
    if st.get("state") == "down":
        print("gateway %s down (%s losses)" % (st.get("gateway"), st.get("losses")))
        return 1
    print("gateway %s %s" % (st.get("gateway"), st.get("state")))
    return 0


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "run"
    if cmd == "health":
        sys.exit(health())
    mon = Monitor()
    threading.Thread(target=events, args=(mon,), daemon=True).start()
    try:
        mon.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
