#!/usr/bin/env bash
# GRPO on GSM8K with Qwen2.5-0.5B-Instruct: veRL's quick start, with SpecActor as the rollout.
# The one line that differs from veRL's own script is ROLLOUT (default specactor; ROLLOUT=vllm runs
# veRL's stock backend with everything else the same). Extra Hydra overrides pass through: "$@".
#
#   bash examples/verl/run_qwen2_5_0_5b_gsm8k_grpo.sh trainer.total_training_steps=20
#
# Needs a GPU node with veRL (`pip install 'specactor[verl]'`), Node.js 20 and GSM8K prepared by veRL
# (`python -m verl.examples.data_preprocess.gsm8k --local_save_dir ~/data/gsm8k`, or veRL's
# examples/data_preprocess/gsm8k.py). What this version of specactor supports is in docs/VERL.md:
# standalone rollout today; veRL's hybrid engine (weights synced into the rollout every step) stops
# at start-up with an error that names it.
set -euo pipefail
DATA=${DATA:-$HOME/data/gsm8k}
MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
ROLLOUT=${ROLLOUT:-specactor}

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size=256 \
    data.max_prompt_length=512 \
    data.max_response_length=512 \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.rollout.name="$ROLLOUT" \
    actor_rollout_ref.rollout.n=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    actor_rollout_ref.rollout.calculate_log_probs=True \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
    trainer.logger='["console"]' \
    trainer.project_name=specactor_gsm8k \
    trainer.experiment_name="qwen2.5-0.5b-grpo-$ROLLOUT" \
    trainer.n_gpus_per_node="${GPUS:-1}" \
    trainer.nnodes=1 \
    trainer.save_freq=-1 \
    trainer.test_freq=10 \
    trainer.total_epochs=1 \
    "$@"
