#!/usr/bin/env bash
# On a lent GPU machine (device tool): install carried wheels, unpack carried data parts into /tmp/data.
# Usage: source scripts/device_prep.sh [part.tar ...]
if [ -d .whl ] && [ ! -d /tmp/site ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PY=python3
mkdir -p /tmp/data
for part in "$@"; do tar -xf "$part" -C /tmp/data; done
du -sh /tmp/data; ls /tmp/data
