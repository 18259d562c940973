"""Pure parsers and validators the configuration schema needs, kept below it so that config.py imports no area."""
