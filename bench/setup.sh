#!/usr/bin/env bash
# What `npm run bench` needs beyond npm: Debian's redis-server (the scale-out and soak rows) and h2load
# from nghttp2-client (the delivery-while-accepting row), installed when missing where apt-get can. Where
# it cannot, those rows are skipped and the bench says why.
set -uo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } ||
			echo "bench/setup.sh: could not install ${missing[*]}: their rows are skipped" >&2
	else
		echo "bench/setup.sh: ${missing[*]} not installed (and no apt-get as root here): their rows are skipped" >&2
	fi
fi
exit 0
