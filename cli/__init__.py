"""flexguard: screens photos for displays of wealth before they are posted.

The package's parts live in the repository's top-level folders (``models/``, ``service/``,
``training/``, ``datasets/``) and are installed under this one import name.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flexguard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
