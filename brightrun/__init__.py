"""What every stage of the pipeline shares (converters, axolotl_configs, jobs, bench): the bad-input error
and the offline settings for Axolotl and the Hugging Face libraries. Nothing here imports a stage.

Importing it installs brightrun/quiet.py's filter (two harmless torchao/torch lines, nothing else): every
stage imports brightrun before anything imports torch, so this is the one place it happens in our
processes."""

from brightrun.quiet import quiet_third_party_logs

quiet_third_party_logs()
