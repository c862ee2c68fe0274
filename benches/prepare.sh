# Sourced by the serve benchmarks: builds bunker (release; BUNKER_PROFILE=debug for the debug
# build) and starts the emulator (deploy/local/emulator.sh) with boto3 in its venv.
# Sets: bin (the bunker binary) and what emulator.sh sets.
profile="${BUNKER_PROFILE:-release}"
if [ "$profile" = release ]; then cargo build --locked --release --quiet --bin bunker; else cargo build --locked --quiet --bin bunker; fi
source deploy/local/emulator.sh
"$python" -c 'import boto3' 2>/dev/null || "$(dirname "$python")/pip" install -q boto3
bin="$CARGO_TARGET_DIR/$profile/bunker"
