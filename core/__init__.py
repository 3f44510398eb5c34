"""snnconv core: ANN -> rate-coded SNN conversion as a pure library (no server imports)."""

__version__ = "0.1.0"
