"""snnconv core: ANN -> rate-coded SNN conversion as a pure library (no server imports)."""

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"
