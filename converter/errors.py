"""The one exception type the package raises for bad input."""


class ConverterError(Exception):
    """A problem with a user's files or arguments, worded so the user can act on it.

    Messages start with the file they concern and name the layer or blob where one applies.
    """


class InputsError(ConverterError, TypeError):
    """Inputs that do not fit a model's forward (their number, or not tensors): a
    ConverterError, and a TypeError as Python raises for a call with wrong arguments."""


def file_error(path: object, exc: OSError) -> ConverterError:
    """The one-line error for a file that cannot be opened or read, saying why."""
    if isinstance(exc, FileNotFoundError):
        return ConverterError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return ConverterError(f"{path}: is a directory, expected a file")
    if isinstance(exc, PermissionError):
        return ConverterError(f"{path}: permission denied")
    return ConverterError(f"{path}: cannot read ({exc.strerror or exc})")


def noun(count: int, singular: str, plural: str | None = None) -> str:
    """``singular`` when ``count`` is one, else ``plural`` (by default ``singular + "s"``):
    messages say "1 layer" and "2 layers", never "layer(s)"."""
    return singular if count == 1 else plural or f"{singular}s"


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """ "1 layer", "3 layers": ``count`` and its ``noun``."""
    return f"{count} {noun(count, singular, plural)}"


def article(word: str) -> str:
    """ "a" or "an" before ``word`` as it is read aloud: "an onnx file", "a safetensors
    file", and this tool's initialisms by their letters ("an mmdet checkpoint", "an HDF5
    file", "an npz")."""
    spoken = word.lower()
    vowel = spoken[:1] in ("a", "e", "i", "o") or spoken.startswith(("mm", "hdf", "np"))
    return "an" if vowel else "a"
