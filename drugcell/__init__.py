"""drugcell: predict transcriptome responses to unseen molecules, and benchmark honestly."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drugcell")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
