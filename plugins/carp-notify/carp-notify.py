#!/usr/bin/env python3
"""carp-notify: a tandem plugin. Reads tandem events (JSON lines) on stdin; for each
carp.transition appends one line to a log file and runs an optional command.

Config (TANDEM_PLUGIN_CONFIG, from <config> in config.xml):
  log      file to append to (default: $TANDEM_PLUGIN_STATE/transitions.log)
  command  shell command run for each transition (optional); it gets the log line on stdin and
           CARP_VHID, CARP_DEVICE, CARP_INTERFACE, CARP_FROM, CARP_TO, CARP_REASON,
           CARP_SUBSYSTEM (= <vhid>@<device>) in its environment
  timeout  seconds the command may take (default 10)
"""
import json
import os
import subprocess
import sys
import time


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    try:
        cfg = json.loads(os.environ.get("TANDEM_PLUGIN_CONFIG") or "{}")
        if not isinstance(cfg, dict):
            cfg = {}
    except ValueError:
        log("TANDEM_PLUGIN_CONFIG is not JSON; using defaults")
        cfg = {}
    state = os.environ.get("TANDEM_PLUGIN_STATE", ".")
    path = cfg.get("log") or os.path.join(state, "transitions.log")
    command = cfg.get("command") or ""
    try:
        timeout = max(1, min(300, int(cfg.get("timeout") or 10)))
    except ValueError:
        timeout = 10
    log("carp-notify: logging to %s%s" % (path, ", running a command" if command else ""))
    for raw in sys.stdin:
        try:
            ev = json.loads(raw)
        except ValueError:
            log("carp-notify: ignoring a line that is not JSON")
            continue
        if not isinstance(ev, dict) or ev.get("event") != "carp.transition":
            continue
        vhid, dev = ev.get("vhid"), ev.get("device", "")
        line = "%s vhid %s@%s (%s) %s -> %s: %s" % (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            vhid, dev, ev.get("interface", ""), ev.get("from", ""), ev.get("to", ""),
            ev.get("reason", ""))
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            log("carp-notify: cannot append to %s: %s" % (path, e))
        if command:
            env = dict(os.environ)
            env.update({
                "CARP_VHID": str(vhid), "CARP_DEVICE": str(dev),
                "CARP_INTERFACE": str(ev.get("interface", "")),
                "CARP_FROM": str(ev.get("from", "")), "CARP_TO": str(ev.get("to", "")),
                "CARP_REASON": str(ev.get("reason", "")),
                "CARP_SUBSYSTEM": "%s@%s" % (vhid, dev),
            })
            try:
                r = subprocess.run(["/bin/sh", "-c", command], input=line + "\n", text=True,
                                   env=env, timeout=timeout, capture_output=True)
                if r.returncode != 0:
                    log("carp-notify: command failed (exit %d): %s" % (r.returncode, r.stderr.strip()[:200]))
            except subprocess.TimeoutExpired:
                log("carp-notify: command timed out after %ds" % timeout)
            except OSError as e:
                log("carp-notify: cannot run the command: %s" % e)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
