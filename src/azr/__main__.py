from azr.cli import app

app(prog_name="azr")
