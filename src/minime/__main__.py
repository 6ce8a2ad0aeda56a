"""`python -m minime` runs the CLI."""

from minime.cli import app

app(prog_name="minime")
