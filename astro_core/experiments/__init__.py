"""Controlled experiments run through the platform: `astro experiment astro-vs-direct`.

`config` holds ExperimentConfig and its presets (presets/*.yaml), `driver` turns each seed into
one RunSpec with the Direct-CoT control arm and collects what the runs evaluated; the
aggregation and the report are `astro_core.analysis.experiment`.
"""

from astro_core.experiments.config import ExperimentConfig, load_experiment_config

__all__ = ["ExperimentConfig", "load_experiment_config"]
