"""Exceptions raised by spikeforge.

Every error a user can cause is raised in Python, in the user's words: it names the
model, the field and, for files, the file and line, before any compiler is run.
"""

from __future__ import annotations


class SpikeforgeError(Exception):
    """Base class of every error spikeforge raises on purpose."""


class ModelError(SpikeforgeError, ValueError):
    """A model definition is wrong (unknown symbol, malformed equation, bad parameter...)."""

    def __init__(self, message: str, model: str | None = None, field: str | None = None):
        self.model = model
        self.field = field
        where = ""
        if model is not None:
            where = f"model '{model}'"
            if field is not None:
                where += f", field '{field}'"
            where += ": "
        super().__init__(where + message)


class NetworkError(SpikeforgeError, ValueError):
    """A network is wrong (unknown population, negative delay, wrong array shape...)."""


class ConfigError(SpikeforgeError, ValueError):
    """A YAML file is malformed or does not describe a valid network; names file and line."""

    def __init__(self, message: str, filename: str | None = None, line: int | None = None):
        self.filename = filename
        self.line = line
        prefix = ""
        if filename is not None:
            prefix = f"{filename}:{line}: " if line is not None else f"{filename}: "
        super().__init__(prefix + message)


class CompilerNotFoundError(SpikeforgeError, RuntimeError):
    """No usable C++ (or CUDA) compiler was found."""


class BuildError(SpikeforgeError, RuntimeError):
    """Generated code failed to compile; the message leads with what was being built."""


class BackendUnavailableError(SpikeforgeError, RuntimeError):
    """A backend was requested that cannot run here (missing GPU, missing package...)."""


class NonFiniteStateError(SpikeforgeError, ArithmeticError):
    """A simulation variable became NaN or inf (``Simulation(on_nonfinite="raise")``)."""


class NonFiniteStateWarning(RuntimeWarning):
    """A simulation variable became NaN or inf (the default report; see ``sim.nonfinite``)."""


class ResourceError(SpikeforgeError, RuntimeError):
    """This machine cannot do what was asked (not enough memory, an unusable compile
    cache, a build lock that is never released); raised before anything fails."""


class MemoryLimitError(ResourceError, MemoryError):
    """A network, a recording or a training batch would not fit in the available memory;
    the message names the largest consumer. Raised before anything big is allocated."""


class CacheError(ResourceError):
    """The compile cache cannot be used: its directory cannot be created or written, or
    another build of the same code holds its lock for too long."""
