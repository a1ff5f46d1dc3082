"""The one exception type the package raises for bad input."""


class ConverterError(Exception):
    """A problem with a user's files or arguments, worded so the user can act on it.

    Messages start with the file they concern and name the layer or blob where one applies.
    """
