"""Helpers every layer uses: the project's error types (`common.errors`), atomic file
writes (`common.files`), type checks of configured values (`common.checks`) and what the command lines share (`common.cli`: flags from
Config, one-line errors, quiet start-up)."""
