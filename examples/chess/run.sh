#!/usr/bin/env bash
# The chess example end to end, in one command (see README.md):
#
#   bash examples/chess/run.sh
#
# Builds the map and reduce images FROM pfs-python-base:local, generates PGN games, adds
# the files of samples/ (PGN as real tools and people write it, and files that are not
# games), puts them in pfs, stores the two jobs, commits with --run and prints the report;
# then adds a few games, commits again, and checks that only the new games were analysed.
#
# Settings, all optional (environment):
#   CHESS_GAMES=100      games in the first commit
#   CHESS_NEW_GAMES=10   games added by the second commit
#   CHESS_SEED=1         the generator's seed (same seed, same games)
#   CHESS_WORKDIR=DIR    keep games, pfs data and the server log in DIR (else a temp dir, removed)
#   PFS_URL=URL          use this pfs server (else one is started on a free loopback port)
#   PFS=CMD              the pfs command (else the repo's .venv/bin/pfs, else pfs on PATH)
# Exits non-zero on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
GAMES=${CHESS_GAMES:-100}
NEW=${CHESS_NEW_GAMES:-10}
SEED=${CHESS_SEED:-1}
BASE_IMAGE=pfs-python-base:local
MAP_IMAGE=pfs-example-chess-map:local
REDUCE_IMAGE=pfs-example-chess-reduce:local
STARTED=$SECONDS

say() { printf '\n== %s\n' "$*"; }
die() {
    echo "run.sh: error: $*" >&2
    exit 1
}

if [ -z "${PFS:-}" ]; then
    if [ -x "$ROOT/.venv/bin/pfs" ]; then
        PFS=$ROOT/.venv/bin/pfs
    elif command -v pfs >/dev/null 2>&1; then
        PFS=$(command -v pfs)
    else
        die "no pfs command: run '.venv/bin/pip install -e .' in $ROOT, or set PFS"
    fi
fi
if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi

if [ -n "${CHESS_WORKDIR:-}" ]; then
    WORK=$CHESS_WORKDIR
    KEEP=1
    mkdir -p "$WORK"
    rm -rf "$WORK/games" "$WORK/pfs-data" # every run starts from scratch
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pfs-chess.XXXXXX")
    KEEP=0
fi
SERVER_PID=

cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$WORK/server.log" ]; then
        echo "--- pfs server log (tail), $WORK/server.log:" >&2
        tail -n 30 "$WORK/server.log" >&2
    fi
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A run's JSON status, reduced to "state done total reused" for one job (the HTTP API is
# the stable interface for scripts; `pfs job status` is for people).
job_counts() {
    "$PY" - "$PFS_URL" "$1" "$2" <<'EOF'
import json, sys, urllib.request
url, commit, job = sys.argv[1:]
req = urllib.request.Request(f"{url.rstrip('/')}/run/{commit}", headers={"accept": "application/json"})
with urllib.request.urlopen(req, timeout=30) as resp:
    status = json.load(resp)
j = next(j for j in status["jobs"] if j["job"] == job)
print(j["state"], j["done"], j["total"], j["reused"])
EOF
}

run_jobs() {
    local commit=$1
    if ! "$PFS" job wait "$commit" --timeout 900; then
        for job in chess-analyse chess-report; do
            echo "--- pfs job log $job -c $commit" >&2
            "$PFS" job log "$job" -c "$commit" 2>&1 | tail -n 40 >&2 || true
        done
        die "the jobs did not succeed on commit $commit"
    fi
}

say "Docker and the job images"
if ! docker info >/dev/null 2>&1 || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        die "Docker or $BASE_IMAGE is missing; set them up with: sudo bash $ROOT/scripts/docker-setup.sh"
    fi
    bash "$ROOT/scripts/docker-setup.sh"
fi
for spec in "map:$MAP_IMAGE" "reduce:$REDUCE_IMAGE"; do
    dir=${spec%%:*}
    image=${spec#*:}
    # The context is examples/chess (its .dockerignore lets only the servers' modules in).
    if ! out=$(docker build -q -t "$image" -f "$HERE/$dir/Dockerfile" "$HERE" 2>&1); then
        echo "$out" >&2
        die "docker build of $image failed"
    fi
    echo "built $image ($(docker image inspect -f '{{.Id}}' "$image" | cut -c8-19), FROM $BASE_IMAGE)"
done

say "Generating $GAMES games (seed $SEED), and adding samples/"
"$PY" "$HERE/generate.py" --out "$WORK/games" --count "$GAMES" --seed "$SEED"
cp -R "$HERE/samples" "$WORK/games/samples"
echo "added $(find "$HERE/samples" -type f | wc -l) files of samples/: real-world PGN, and files that are not games"
FILES=$(find "$WORK/games" -type f | wc -l)

if [ -z "${PFS_URL:-}" ]; then
    say "Starting a pfs server"
    port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export PFS_URL=http://127.0.0.1:$port
    PFS_JOB_RUNTIME=docker "$PFS" serve --addr "127.0.0.1:$port" --data-dir "$WORK/pfs-data" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    "$PY" - "$PFS_URL" "$SERVER_PID" <<'EOF' || die "the pfs server did not start"
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    try:
        urllib.request.urlopen(url + "/ping", timeout=1).read()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
    echo "pfs serving $WORK/pfs-data on $PFS_URL (stopped at exit)"
fi
export PFS_URL

say "Putting the games in pfs and storing the jobs"
"$PFS" put "$WORK/games" games
"$PFS" job put chess-analyse "$HERE/jobs/chess-analyse.json"
"$PFS" job put chess-report "$HERE/jobs/chess-report.json"
"$PFS" job ls

say "Commit and run"
C1=$("$PFS" commit -m "$GAMES games" --run)
echo "commit $C1"
run_jobs "$C1"
first=$(cd "$WORK/games" && find . -name '*.pgn' | sort | head -n 1 | cut -c3-)
say "One game's analysis: pfs job cat chess-analyse $first -c ${C1:0:12}"
"$PFS" job cat chess-analyse "$first" -c "$C1"
say "The report: pfs job cat chess-report -c ${C1:0:12}"
"$PFS" job cat chess-report -c "$C1" | tee "$WORK/report1.json"

say "Adding $NEW games, putting the whole directory again, commit and run"
"$PY" "$HERE/generate.py" --out "$WORK/games" --first "$GAMES" --count "$NEW" --seed "$SEED"
"$PFS" put "$WORK/games" games
C2=$("$PFS" commit -m "$NEW more games" --run)
echo "commit $C2; changed since ${C1:0:12}: $("$PFS" diff "$C1" "$C2" | grep -c .) file(s)"
run_jobs "$C2"
read -r state done total reused < <(job_counts "$C2" chess-analyse)
echo "chess-analyse: $state, analysed $done file(s), reused $reused of $total"
if [ "$done" != "$NEW" ] || [ "$reused" != "$FILES" ] || [ "$total" != $((FILES + NEW)) ]; then
    die "expected exactly the $NEW new games to be analysed and the $FILES files before them reused"
fi
"$PFS" job cat chess-report -c "$C2" >"$WORK/report.json"
"$PY" - "$WORK/report1.json" "$WORK/report.json" "$NEW" <<'EOF'
import json, sys
reports = []
for name in sys.argv[1:3]:
    with open(name) as f:
        reports.append(json.load(f))
first, r = reports
res = r["results"]
wins = ", ".join(f"{k.replace('_', ' ')} {res[k]['count']}" for k in ("white_wins", "black_wins", "draws"))
print(f"report on the new commit: {r['games']} games ({wins}), {r['mates']} mates")
bad = r["not_games"]
names = ", ".join(x["path"] + (f" (game {x['game']})" if "game" in x else "") for x in bad["first"])
print(f"not games: {bad['count']}" + (f": {names}" if names else ""))
if r["games"] != first["games"] + int(sys.argv[3]) or bad != first["not_games"]:
    sys.exit("run.sh: error: the new commit's report does not count exactly the new games more")
EOF

say "Done in $((SECONDS - STARTED)) s"
if [ "$KEEP" = 1 ]; then echo "games, pfs data, server log and report.json kept in $WORK"; fi
echo "commits: $C1 ($FILES files), $C2 ($((FILES + NEW)) files)"
