"""Helpers every room of the package may import (they import nothing else of ppdet_dac)."""
