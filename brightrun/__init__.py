"""What every stage of the pipeline shares (converters, axolotl_configs, jobs, bench): the bad-input error
and the offline settings for Axolotl and the Hugging Face libraries. Nothing here imports a stage."""
