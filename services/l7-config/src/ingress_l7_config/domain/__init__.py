"""Pure planning code: validation, Envoy resources from desired state, xDS push order.

No I/O, no asyncio, no clock: time is a parameter.
"""
