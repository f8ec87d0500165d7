from speechnas.cli import app

app()
