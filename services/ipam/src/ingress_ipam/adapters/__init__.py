"""Side effects: the allocation store (JetStream KV) and its in-memory twin."""
