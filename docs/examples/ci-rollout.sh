#!/bin/sh
# A CI job's deploy step: apply every plan in a directory, start the rollout, and wait
# until it has completed. Needs ROLLOUT_SERVER and ROLLOUT_TOKEN (an operator token).
#
#   docs/examples/ci-rollout.sh plans/ memory-layer 30m
#
# Exit 0 completed; 4 not completed within the timeout; 5 ended otherwise (rolled back
# or aborted); 1, 2, 3 as for any rollout command (refused, bad input, unreachable).
set -eu
plans=${1:?usage: ci-rollout.sh PLANS_DIR ROLLOUT [TIMEOUT]}
name=${2:?usage: ci-rollout.sh PLANS_DIR ROLLOUT [TIMEOUT]}
timeout=${3:-30m}

rollout apply -f "$plans"                  # stops at the first refused file
# Refused (exit 1) unless the rollout is pending, e.g. when this job runs again.
rollout start "$name" --reason "CI job ${CI_JOB_ID:-local}" || echo "not started; waiting anyway"

code=0
rollout wait "$name" --for completed --timeout "$timeout" || code=$?
case $code in
  0) echo "rollout/$name completed" ;;
  4) echo "rollout/$name did not complete within $timeout: still going, look at it" >&2 ;;
  5) echo "rollout/$name ended without completing: see 'rollout audit --rollout $name'" >&2 ;;
esac
exit $code
