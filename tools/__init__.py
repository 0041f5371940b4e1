"""The command-line stages. Each tools/<stage>.py runs as a script
(`python tools/<stage>.py`); the package exists only for tools.entry, the
console scripts of pyproject.toml."""
