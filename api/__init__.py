"""snnconv's REST service: a thin FastAPI shell around ``core.pipeline``."""
