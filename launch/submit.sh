#!/usr/bin/env bash
# Submit a distrl training job to a running Ray cluster and follow it to the end.
#
#   RAY_ADDRESS=http://<head>:8265 launch/submit.sh algorithm=gspo trainer.total_steps=200
#
# Every argument is passed to `python -m distrl.train` as a Hydra override. The repository is
# uploaded as the job's working directory (minus the excludes in launch/runtime_env.yaml), so the
# job runs this checkout's code on the cluster's installed distrl environment.
#
# Environment:
#   RAY_ADDRESS   the cluster's job server (dashboard); default http://127.0.0.1:8265.
#   RAY_AUTH_MODE set to "token" here when it is unset and a token is available (RAY_AUTH_TOKEN,
#                 RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): Ray's job client sends the token only then.
#
# Exit status: 0 when the job succeeded; the job's own exit status when it failed with one
# (distrl.train exits 2 on a config error); 1 for any other failure, including a stopped job.
# Interrupting this script stops following the job, not the job: use `ray job stop <id>`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

if [[ -x "$repo_root/.venv/bin/ray" ]]; then
    ray_cli="$repo_root/.venv/bin/ray"
elif command -v ray >/dev/null 2>&1; then
    ray_cli="$(command -v ray)"
else
    echo "submit.sh: no ray CLI found (neither $repo_root/.venv/bin/ray nor ray on PATH); install distrl first." >&2
    exit 1
fi

if [[ -z "${RAY_ADDRESS:-}" ]]; then
    export RAY_ADDRESS="http://127.0.0.1:8265"
    echo "submit.sh: RAY_ADDRESS is not set; using $RAY_ADDRESS (the head node's dashboard on this machine)." >&2
fi

if [[ -z "${RAY_AUTH_MODE:-}" ]]; then
    if [[ -n "${RAY_AUTH_TOKEN:-}" || -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]]; then
        export RAY_AUTH_MODE=token
    fi
fi

submission_id="distrl-$(date +%Y%m%d-%H%M%S)-$$"

status=0
"$ray_cli" job submit \
    --address "$RAY_ADDRESS" \
    --submission-id "$submission_id" \
    --runtime-env "$repo_root/launch/runtime_env.yaml" \
    --working-dir "$repo_root" \
    -- python -m distrl.train "$@" || status=$?

# `ray job submit` exits 1 for every failure and 0 for a stopped job; ask the job server what happened.
job_status="$("$ray_cli" job status --address "$RAY_ADDRESS" "$submission_id" 2>&1)" || exit "$status"
if [[ "$job_status" =~ Status\ message:\ Job\ entrypoint\ command\ failed\ with\ exit\ code\ ([0-9]+) ]]; then
    exit "${BASH_REMATCH[1]}"
fi
if [[ "$job_status" == *"' was stopped"* ]]; then
    echo "submit.sh: job $submission_id was stopped." >&2
    exit 1
fi
exit "$status"
