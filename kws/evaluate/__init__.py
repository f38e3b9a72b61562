"""`kws evaluate` and `kws listen-errors`: scoring, reports, the errors page and playback."""
