"""Pure planning code: validation, announce-after-ready with hold-down, BIRD config rendering.

No I/O, no asyncio, no clock: time is always a parameter.
"""
