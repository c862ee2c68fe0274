# Sourced by the demo and the benchmarks: installs the emulator if needed and starts it on a
# free 127.0.0.1 port for the life of the calling script.
# Sets: python (the venv's), work (a temp dir, removed on exit), port, AWS_ENDPOINT_URL and
# region variables. The emulator stops when the script exits (trap and stdin EOF).
python=$(bash "$(dirname "${BASH_SOURCE[0]}")/setup-emulator.sh" | tail -n 1)
work=$(mktemp -d)
coproc MOTO { exec "$python" "$(dirname "${BASH_SOURCE[0]}")/motoserver.py" --port 0 2>"$work/moto.log"; }
trap 'kill "$MOTO_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
read -r _emulator_line <&"${MOTO[0]}"
port=${_emulator_line#BUNKER_MOTO_PORT=}
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
