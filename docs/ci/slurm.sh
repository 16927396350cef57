#!/usr/bin/env bash
# pytest-medrobust on SLURM: the grid as a job array of SHARDS tasks, then a merge job that
# starts when every task has ended. Run from the project folder: `bash docs/ci/slurm.sh`.
# Each task reads its share from SLURM_ARRAY_TASK_ID, _MIN, _MAX and _COUNT
# (--medrobust-shard auto); the array must be an evenly spaced range such as 1-N.
# Tested: tests/test_ci_recipes.py runs this script with a stand-in for sbatch.
set -euo pipefail

SHARDS="${SHARDS:-3}"
mkdir -p reports

# Add your cluster's options (--partition, --gres=gpu:1, --time, ...). With several GPUs per task,
# add -n auto to the pytest command: xdist starts one worker per GPU.
array_job=$(sbatch --parsable --array="1-$SHARDS" --job-name=medrobust-shard \
    --output=reports/slurm-%A_%a.out \
    --wrap='pytest --medrobust-only --medrobust-shard auto --medrobust-report-dir "reports/shard-$SLURM_ARRAY_TASK_ID"')

# afterany, not afterok: a share whose gate failed exits 1, and the merge still gives the verdict
# (exit 0 pass, 1 fail, 4 a shard's set-up error, 2 a shard missing, cut short or edited).
sbatch --parsable --dependency="afterany:${array_job%%;*}" --job-name=medrobust-merge \
    --output=reports/slurm-merge-%j.out \
    --wrap='medrobust merge reports -o reports/merged'
