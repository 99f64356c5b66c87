"""mccscan: find microcalcification clusters in mammograms."""

__version__ = "0.2.0"
