"""The HTTP face: parses, authenticates, renders; one service call per request."""
