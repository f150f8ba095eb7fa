"""`python -m agrl ...` is the `agrl` command (for machines where the console script is not installed)."""

from agrl.cli import app

app(prog_name="agrl")
