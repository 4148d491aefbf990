"""The job engine: ``Engine`` (intake.py) is the facade adapters use.

scheduler.py runs the durable queue; pipeline.py drives one job through WaveSpeed;
couriers.py calls the adapters back.
"""

from bot.engine.intake import Engine

__all__ = ["Engine"]
