"""Training: SFT and GRPO on DeepSpeed, one config + one implementation per algorithm.

Where things are (import from the modules; this package imports nothing heavy):

- `config`: `TrainerConfig` (job fields + shared optimisation fields, TRL names),
  `DeepSpeedSettings`, `LoraSettings`, `load_train_config(cls, path, preset=, overrides=)`,
  `parse_set_options(["a.b=1"])`, `config_to_yaml`; presets in `presets/<stage>-<name>.yaml`.
- `job`: `STAGES`, `config_class(stage)`, `run_stage(config, services)`,
  `TrainingServices` (store, generator, verifier, progress sinks), `TrainResult`.
- `engine`: `init_distributed` / `shutdown_distributed` (launcher env or a group of one),
  `TrainEngine` (DeepSpeed: ZeRO 0-3, accumulation, clipping, warmup + cosine;
  `backward`, `step() -> StepStats`, `full_state_dict`, `save_state` / `load_state`),
  `all_reduce_sum`, `barrier`, `uses_bf16`, `import_deepspeed`.
- `models`: `prepare_model(config, store, env)` (a directory or `NAME:VERSION` /
  `NAME@ALIAS` through the CheckpointStore, causal-LM check, LoRA), `merged_state_dict`,
  `ModelLoadError`.
- `checkpointing`: `Checkpointer` (HF checkpoint + DeepSpeed state every save, registration
  with stage/step/metrics/parent/aliases, `resume()` restoring weights, optimizer, schedule,
  RNG and the stage's own state), `complete_checkpoints`.
- `train_log`: `TrainLogger` (train_log.jsonl + sinks), `TrainProgress`, `ProgressSink`,
  `ConsoleProgress`, `read_log`.
- `sft_config` / `sft`: `SFTConfig`, `train_sft(config, services)`; `data`: traces ->
  tokens, batch plans, packing.
- `grpo_config` / `grpo` (GRPO), and the RL modules beside them.
"""
