"""talkinghead: one portrait + a speech recording -> a talking-head video (DAWN and friends)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
