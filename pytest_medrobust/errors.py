"""Exceptions with messages meant for the person running the gate."""


class MedrobustError(Exception):
    """Base class: a problem the user can fix (bad option, bad file, bad data)."""


class ConfigError(MedrobustError):
    """An option or configuration value is invalid; the message names the option or key."""


class DatasetError(MedrobustError):
    """The dataset cannot be used; the message names the file, row and reason."""


class ModelLoadError(MedrobustError):
    """A model could not be built or loaded; the message names the model and the cause."""


class OcclusionError(MedrobustError):
    """A patch type or its options are invalid, or a patch produced an invalid mask."""
