"""Pure planning code: pools, requests and the allocator. No I/O, no clock, no asyncio."""
