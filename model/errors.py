"""The errors a user can cause. The CLI turns each into one line and exit code 2.

Every message names the file or key at fault and says what to do about it.
"""


class QAError(Exception):
    """Base of every error a user can cause and fix."""


class DataError(QAError):
    """A dataset folder, label file or image cannot be used."""


class CheckpointError(QAError):
    """A model checkpoint is missing, incomplete or of an unknown kind."""


class PromptError(QAError):
    """A prompt that is neither a configured prompt nor a clear paraphrase of one."""
