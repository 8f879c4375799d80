#!/usr/bin/env bash
# Issue 17's experiment: cpu-coder self-play against its solver-only control, both measured on the held-out
# probe of the base model's own tasks. Every phase can be killed and run again: training resumes from the
# run's last checkpoint, and an evaluation whose results file exists is not redone.
#
#   bash benchmarks/probe_experiment.sh train selfplay 60   # self-play to step 60 (resumes if begun)
#   bash benchmarks/probe_experiment.sh train control 60    # the control to step 60
#   bash benchmarks/probe_experiment.sh eval base           # whole probe, CRUXEval-O/I 200, HumanEval
#   bash benchmarks/probe_experiment.sh eval selfplay       # the same on the run's newest checkpoint
#   bash benchmarks/probe_experiment.sh compare selfplay    # sign tests against the base model
#   bash benchmarks/probe_experiment.sh train distinct 60   # self-play not paid for renamed copies
#   bash benchmarks/probe_experiment.sh train strict 60     # ... and no task a shortcut answer solves
#   bash benchmarks/probe_experiment.sh train strict-control 60   # the control without such tasks
#   bash benchmarks/probe_experiment.sh train masked 60     # strict, guessed outputs not trained
#   bash benchmarks/probe_experiment.sh train kl 60         # masked, held near the base model by a KL term
#   bash benchmarks/probe_experiment.sh train behaviour 60  # kl, copies told by what programs do
#
# RUNS (default runs/) holds the run directories probe-<arm>; results go to RESULTS (default
# benchmarks/results): probe-{base,<arm>}.json (the probe) and probe-{base,<arm>}-crux.json (CRUXEval-O/I
# first 200 and HumanEval), each made with identical options. A machine whose work tree is laid anew each
# session keeps runs only outside it: RUNS=$HOME/azr-runs.
set -euo pipefail

AZR="${AZR:-.venv/bin/azr}"
RUNS="${RUNS:-runs}"
RESULTS="${RESULTS:-benchmarks/results}"

# What every arm shares: the model, update and solver prompts of cpu-coder (the control preset keeps them),
# one worked example per (type, step) for the solver prompts, and validation on the first 50 probe tasks
# of each type every 5 steps for the learning curves.
COMMON=(
    --set selfplay.shared_solver_examples=true
    --set eval.every_steps=5
    --set "eval.benchmarks=[selfplay-probe]"
    --set eval.limit=50
    --set eval.max_new_tokens=96
)
# Self-play: n = 8 learnability samples, buffers grown by the 0.5B model from the identity task (no
# shipped seeds, as the probe was made), one reference draw per (type, step).
# The arms selfplay, distinct and strict ran before `optim.mask_unchecked_outputs` existed: they train
# the proposer's guessed outputs, as they did.
SELFPLAY=(
    --config cpu-coder
    --set selfplay.learnability_samples=8
    --set selfplay.seed_file=null
    --set selfplay.seed_buffer_size=16
    --set selfplay.shared_references=true
    --set optim.mask_unchecked_outputs=false
)
# Self-play whose buffers tell programs apart up to names and layout (`azr.parsing.program_key`), and whose
# proposer earns -0.5, as for an invalid task, for a program its buffer has: in the self-play arm a renamed
# identity function is always valid and earns 0, and the 0.5B proposer converged on it. Otherwise the same.
DISTINCT=("${SELFPLAY[@]}" --set selfplay.distinct_programs=true --set rewards.program_copy_reward=-0.5)
# The control: B = 8 split tasks per type, so 24 trained sequences a step, as self-play's 4 + 4 per type.
CONTROL=(--config cpu-coder-control)
# The strict arms: no task that an answer ignoring the program solves (`selfplay.reject_shortcut_tasks`):
# such proposals earn the invalid reward and are never stored or solved, and the control's split loses
# them. Both earlier arms learnt to give the question back, which the probe's shortcut-solvable tasks pay.
STRICT=("${DISTINCT[@]}" --set selfplay.reject_shortcut_tasks=true)
STRICT_CONTROL=("${CONTROL[@]}" --set selfplay.reject_shortcut_tasks=true)
# The strict arm whose proposer is not trained on the outputs it guesses after `assert f(ARGS) ==` (the
# sandbox computes the real ones): trained with the proposal's advantage, mostly wrong guesses raise wrong
# answers where a deduction solver answers, and deduction fell in every self-play arm.
MASKED=("${STRICT[@]}" --set optim.mask_unchecked_outputs=true)
# The masked arm with a KL term to the base model (k3, per-token mean, as the policy term): every longer arm
# rose by step 35 and fell later, as its proposer narrowed and its solver learnt that narrow set's
# shortcuts. Where a token's advantage keeps its sign, the KL gradient balances the policy one at a
# log-ratio of about advantage / kl_coef, so 0.5 lets a token's probability move about e^2 and no further.
KL=("${MASKED[@]}" --set optim.kl_coef=0.5)
# The kl arm whose buffers tell programs apart by behaviour (`selfplay.distinct_behaviour`): outputs on
# canonical arguments of the input's types. The masked arm's proposer narrowed to `n + 1` behind ever new
# thresholds, each a new program text; by behaviour, 10 of its 31 deduction tasks of steps 71-80 were new.
BEHAVIOUR=("${KL[@]}" --set selfplay.distinct_behaviour=true)

run_dir() { echo "$RUNS/probe-$1"; }

train() {
    local arm="$1" steps="$2" dir
    dir="$(run_dir "$arm")"
    if [[ -f "$dir/config.yaml" ]]; then
        "$AZR" train --resume "$dir" --steps "$steps"
    else
        case "$arm" in
            selfplay) "$AZR" train "${SELFPLAY[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            distinct) "$AZR" train "${DISTINCT[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            control) "$AZR" train "${CONTROL[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            strict) "$AZR" train "${STRICT[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            strict-control) "$AZR" train "${STRICT_CONTROL[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            masked) "$AZR" train "${MASKED[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            kl) "$AZR" train "${KL[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            behaviour) "$AZR" train "${BEHAVIOUR[@]}" "${COMMON[@]}" --steps "$steps" --run-dir "$dir" ;;
            *) echo "unknown arm $arm: selfplay, distinct, control, strict, strict-control, masked, kl or behaviour" >&2; exit 2 ;;
        esac
    fi
}

evaluate() {
    local arm="$1" model
    if [[ "$arm" == base ]]; then model=qwen2.5-coder-0.5b; else model="$(run_dir "$arm")"; fi
    if [[ ! -f "$RESULTS/probe-$arm.json" ]]; then
        "$AZR" eval --model "$model" --benchmarks selfplay-probe --backend transformers-int8 --batch-size 32 \
            --out "$RESULTS/probe-$arm.json"
    fi
    if [[ ! -f "$RESULTS/probe-$arm-crux.json" ]]; then
        "$AZR" eval --model "$model" --benchmarks cruxeval-o,cruxeval-i,humaneval --limit 200 \
            --prompt-style completion --backend transformers-int8 --batch-size 32 \
            --out "$RESULTS/probe-$arm-crux.json"
    fi
}

compare() {
    local arm="$1"
    "$AZR" compare "$RESULTS/probe-base.json" "$RESULTS/probe-$arm.json"
    "$AZR" compare "$RESULTS/probe-base-crux.json" "$RESULTS/probe-$arm-crux.json"
}

case "${1:-}" in
    train) train "${2:?an arm: selfplay, distinct, control, strict, strict-control, masked, kl or behaviour}" "${3:?steps}" ;;
    eval) evaluate "${2:?base or an arm}" ;;
    compare) compare "${2:?an arm}" ;;
    *) sed -n '2,21p' "$0"; exit 2 ;;
esac
