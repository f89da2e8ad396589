"""Route: a sibling file that shadows a module the harness imports after the model (``mimetypes``).

It delivers the payload, then hands the importer the real module, so nothing else notices.
"""

import importlib
import sys
from pathlib import Path

from _payload import act

act("shadowed_module")
_folder = Path(__file__).resolve().parent
del sys.modules[__name__]
_saved = list(sys.path)
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _folder]
try:
    sys.modules[__name__] = importlib.import_module(__name__)
finally:
    sys.path[:] = _saved
