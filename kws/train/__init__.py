"""`kws train`: the loop, its run dir, validation, distributed helpers and loop state."""
