#!/bin/sh
# Install the Debian packages the suite and the demo start privately: mosquitto and
# influxdb (plus python3-venv, which a fresh Debian lacks, and openssl). Runs apt only when a
# binary is missing; as non-root it prints what to install instead.
# The packages' own system services are kept from starting (policy-rc.d): fieldrig
# never uses a system broker or database, and they would squat on the default ports.
set -eu

missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || missing="$missing influxdb"
# openssl: the broker TLS tests make their certificates with it.
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then missing="$missing python3-venv"; fi

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != "0" ]; then
    echo "fieldrig needs these Debian packages:$missing" >&2
    echo "install them with: sudo apt-get install -y$missing" >&2
    # The demo runs without the broker and the database (bench + gateway only, it says
    # so); it still needs python3-venv.
    case "$missing" in
        *python3-venv*) exit 1 ;;
    esac
    [ "${FIELDRIG_DEPS_OPTIONAL:-0}" = 1 ] && exit 0
    exit 1
fi

echo "installing Debian packages:$missing"
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1
if [ "$had_policy" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
[ "$had_policy" = 0 ] && rm -f "$policy"
echo "installed:$missing"
