"""The one exception type for errors a user can cause (bad files, keys, ids, artifacts).

Scripts catch it, print its message alone on stderr and exit with status 2. The message names the
file, key or id at fault and says how to fix it.
"""


class RecError(Exception):
    """A user-caused error with a one-line, actionable message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
