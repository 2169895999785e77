#!/bin/sh
# Installs what the benchmark needs, each piece only when missing:
#   - Debian packages: wrk (load generator), nginx-light (no-Python ceiling),
#     linux-perf (make bench-profile; valgrind is the fall-back)
#   - bench/.venv with the pinned peers from bench/requirements.txt
#   - uWSGI (compiled from source by pip); when it does not build, the reason
#     goes to bench/.venv/uwsgi-status and the run goes on without it.
# Usage: sh bench/setup.sh [PYTHON]     (PYTHON: base interpreter for the venv)
set -u
here=$(cd "$(dirname "$0")" && pwd)
py=${1:-python3}
venv="$here/.venv"

need_apt=""
command -v wrk >/dev/null 2>&1 || need_apt="$need_apt wrk"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt="$need_apt nginx-light"
command -v perf >/dev/null 2>&1 || command -v valgrind >/dev/null 2>&1 || need_apt="$need_apt linux-perf"
if [ -n "$need_apt" ]; then
	echo "bench: installing Debian packages:$need_apt"
	if [ "$(id -u)" != 0 ]; then
		echo "bench: need root to install$need_apt (run: apt-get install -y$need_apt)" >&2
		exit 1
	fi
	apt-get update -q >/dev/null || { echo "bench: apt-get update failed" >&2; exit 1; }
	# nginx-light's post-install may try to start the system service; the
	# benchmark never uses it (it runs its own nginx with its own config).
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_apt >/dev/null ||
		{ echo "bench: apt-get install$need_apt failed" >&2; exit 1; }
fi
command -v wrk >/dev/null 2>&1 || { echo "bench: wrk is still missing after apt-get" >&2; exit 1; }

stamp="$venv/.stamp"
if [ ! -f "$stamp" ] || [ "$here/requirements.txt" -nt "$stamp" ]; then
	echo "bench: installing peers into bench/.venv"
	[ -x "$venv/bin/python" ] || "$py" -m venv "$venv" ||
		{ echo "bench: cannot create $venv with $py" >&2; exit 1; }
	"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt" ||
		{ echo "bench: pip install -r bench/requirements.txt failed" >&2; exit 1; }
	touch "$stamp"
fi

ustamp="$venv/uwsgi-status"
if [ ! -f "$ustamp" ] || [ "$here/requirements-uwsgi.txt" -nt "$ustamp" ]; then
	echo "bench: building uWSGI (pip compiles it; may take ~30 s)"
	log="$venv/uwsgi-build.log"
	if "$venv/bin/python" -m pip install -q --disable-pip-version-check \
			-r "$here/requirements-uwsgi.txt" >"$log" 2>&1 && [ -x "$venv/bin/uwsgi" ]; then
		echo "ok" > "$ustamp"
	else
		reason=$(grep -iE 'error|fatal' "$log" | grep -v WARNING | tail -1 | cut -c1-200)
		echo "uWSGI did not build: ${reason:-pip failed, see bench/.venv/uwsgi-build.log}" > "$ustamp"
		cat "$ustamp"
	fi
fi
exit 0
