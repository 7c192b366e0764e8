"""Side effects: BIRD's control socket, the config file, the mounted Secrets."""
