"""Development servers shipped with the bot: the WaveSpeed simulator and its clip maker.

The demo and the tests use them; the engine never imports them.
"""
