"""Model import: NeMo `.nemo` speech-command checkpoints (MatchboxNet, QuartzNet) read as kws checkpoints.

archive (the tar and its two members) -> settings (NeMo's config as kws's features and model sections) ->
weights (NeMo's parameter names as kws's) -> importer (the kws checkpoint dict).
"""
