"""spikeforge's front end: YAML files read with their line numbers and checked, so that every
mistake is a one-line ConfigError naming the file, the field and the line.

* :mod:`.lines`: :func:`parse` (a safe loader; duplicate keys, keys that are not names and
  non-finite numbers refused) into :class:`LineDict` / :class:`LineList`, which remember the
  line of every key, value and item;
* :mod:`.reader`: :class:`Reader`, the public reader and validator every loader builds on
  (typed access, values with units, errors of constructors re-raised at a line, the
  ``models:`` section); :mod:`.models`: the kinds of model a file may define;
* the network schema: :mod:`.network` (top level, populations, :func:`load_network`),
  :mod:`.projections`, :mod:`.inputs`; :mod:`spikeforge.config` re-exports it as the stable
  entry point;
* the training schema, :mod:`spikeforge.training.config`, sits on the same :class:`Reader`.
"""

from .lines import LineDict, LineList, copy_lines, dotted, parse, plain, show, type_name
from .models import MODEL_KINDS
from .reader import VALUE_KEYS, Reader

__all__ = [
    "LineDict", "LineList", "parse", "plain", "copy_lines", "dotted", "type_name", "show", "Reader", "MODEL_KINDS",
    "VALUE_KEYS",
]
