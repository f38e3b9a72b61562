"""The one error type library code raises; the CLI turns it into `error: <message>` and exit code 1."""


class KWSError(Exception):
    """A problem the user can fix: the message says what was expected, what was found and what to do."""

    from_rank: int | None = (
        None  # set on the copy that other processes of a DDP run raise (kws.train.distributed)
    )


class DataError(KWSError):
    """Bad or missing data: manifests, audio files, dataset trees."""


class DownloadError(KWSError):
    """A download that could not be completed or verified."""


class ArchiveError(KWSError):
    """An archive that is unsafe or unreadable."""


class ConfigError(KWSError):
    """A configuration file or override that does not fit the schema."""


class CheckpointError(KWSError):
    """A checkpoint that cannot be read or does not fit the run."""


class TrainingError(KWSError):
    """Training that cannot go on (non-finite loss, missing device)."""
