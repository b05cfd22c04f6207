#!/bin/sh
# The compose file's gateway: a simulated fleet on an emulated iM871A (a pty inside this
# container) and `metergate gateway run` reading it. On a real gateway the receiver is a USB
# stick and this script is not needed: run `metergate gateway run --config ...` (see
# deploy/metergate-gateway.service).
set -eu
state=/var/lib/metergate
metergate sim wmbus --receiver im871a --meters "${SIM_METERS:-200}" --seed 1 \
    --link "$state/ttyWMBUS0" > "$state/sim.json" &
sim=$!
trap 'kill "$sim" 2>/dev/null' EXIT INT TERM
while [ ! -s "$state/sim.json" ]; do sleep 0.2; done
# The simulator prints every meter's key; the gateway reads them from a private keys file.
umask 077
python3 - "$state/sim.json" "$state/keys.toml" <<'PY'
import json, sys
fleet = json.loads(open(sys.argv[1]).readline())
keys = {}
for meter in fleet["meters"]:
    for m in (meter, meter.get("replacement") or {}):
        if m.get("key"):
            keys[m["meter_id"]] = m["key"]
with open(sys.argv[2], "w") as out:
    out.write("[keys]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in sorted(keys.items())))
PY
metergate gateway run --config /etc/metergate/gateway.toml
