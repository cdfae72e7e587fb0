"""The engine tests' fixtures; the builders behind them are in builders.py."""

from tests.engine.builders import diamond, text_chain

__all__ = ["diamond", "text_chain"]
